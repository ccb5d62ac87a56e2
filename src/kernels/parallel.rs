//! Large elementwise work: split over two threads and compiled for the
//! widest vector instructions the CPU has.
//!
//! * [`vectorized`] runs a closure in a function compiled for AVX-512, or
//!   else AVX2 and FMA, when the CPU has them (detected at run time), so the
//!   crate needs no `-C target-cpu` flag. Rust never contracts `a * b + c`
//!   into an FMA on its own and never reorders floating-point arithmetic to
//!   vectorize it, so results are bit-identical on every x86-64 CPU
//!   (`every_tier_gives_the_same_bits`). Where a kernel asks for a fused
//!   multiply-add (`mul_add`: the Gamma and Beta derivatives' series and
//!   fractions), every tier computes the same correctly rounded value, the
//!   portable one through libm's `fma` (slower there, the same bits).
//! * [`join`] runs two closures at once, one of them on a persistent helper
//!   thread: no thread is spawned per op, and the two threads spin briefly
//!   for each other before they sleep, so back-to-back parallel ops do not
//!   pay a wake-up each.
//! * [`par_fill`], [`par_new`] and [`par_blocks`] split outputs between the
//!   two threads; [`par_sum2`] and [`sum_lanes`] are sums accumulated in
//!   eight lanes so that they vectorize.

use super::element::Element;
use crate::tensor::Storage;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Slices shorter than this are processed on the calling thread alone.
pub(crate) const PARALLEL_MIN: usize = 1 << 15;

/// The instruction sets [`vectorized`] compiles its closures for, widest
/// first (the order compares them: a wider tier is smaller).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Tier {
    /// AVX-512 F, BW, DQ and VL (with AVX2 and FMA).
    Avx512,
    /// AVX2 and FMA.
    Avx2Fma,
    /// The target's baseline.
    Portable,
}

impl Tier {
    /// Whether the CPU can run code compiled for this tier.
    pub(crate) fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::is_x86_feature_detected as has;
            match self {
                // with AVX2 and FMA, which the AVX-512 functions also enable
                // and which a virtual CPU could in principle hide
                Tier::Avx512 => {
                    has!("avx512f")
                        && has!("avx512bw")
                        && has!("avx512dq")
                        && has!("avx512vl")
                        && Tier::Avx2Fma.supported()
                }
                Tier::Avx2Fma => has!("avx2") && has!("fma"),
                Tier::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Tier::Portable
        }
    }

    /// The tier for a `BAYESGRAD_SIMD` value (`avx512`, `avx2` or
    /// `portable`): the widest the CPU supports, at most the one named
    /// (unset, or a value that names none, which is reported once on
    /// stderr: no cap).
    fn from_env(value: Option<&str>) -> Tier {
        let cap = match value.map(str::trim) {
            None | Some("avx512") => Tier::Avx512,
            Some("avx2") => Tier::Avx2Fma,
            Some("portable") => Tier::Portable,
            Some(other) => {
                eprintln!(
                    "bayesgrad: BAYESGRAD_SIMD={other:?} is not one of avx512, avx2, portable; using the widest the CPU has"
                );
                Tier::Avx512
            }
        };
        [Tier::Avx512, Tier::Avx2Fma, Tier::Portable]
            .into_iter()
            .find(|&t| t >= cap && t.supported())
            .unwrap_or(Tier::Portable)
    }
}

/// The tier [`vectorized`] compiles for: [`Tier::from_env`], decided once.
pub(crate) fn tier() -> Tier {
    #[cfg(test)]
    if let Some(tier) = FORCED.get() {
        return tier;
    }
    static TIER: OnceLock<Tier> = OnceLock::new();
    *TIER.get_or_init(|| Tier::from_env(std::env::var("BAYESGRAD_SIMD").ok().as_deref()))
}

#[cfg(test)]
thread_local! {
    /// The tier [`vectorized`] uses on this thread instead of the widest
    /// one, for tests that compare tiers.
    static FORCED: std::cell::Cell<Option<Tier>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with [`vectorized`] on this thread compiled for `tier`, or
/// returns `None` if the CPU does not support it.
#[cfg(test)]
pub(crate) fn on_tier<R>(tier: Tier, f: impl FnOnce() -> R) -> Option<R> {
    if !tier.supported() {
        return None;
    }
    FORCED.set(Some(tier));
    let r = f();
    FORCED.set(None);
    Some(r)
}

/// Runs `f`, compiled for [`tier`].
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    match tier() {
        // SAFETY: the CPU supports the features the function is compiled
        // for (`Tier::supported`; a forced tier is checked by `on_tier`).
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 => unsafe { with_avx512(f) },
        // SAFETY: as for AVX-512.
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2Fma => unsafe { with_avx2_fma(f) },
        _ => f(),
    }
}

/// The closure is inlined here and compiled with the extra features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
pub(crate) unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// The closure is inlined here and compiled with the extra features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn with_avx2_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long a thread that waits for another spins before it sleeps.
/// Parallel ops in a training step follow each other within tens of
/// microseconds; waking a sleeping thread costs about as much, so a short
/// spin hands work over faster, and a thread idle for longer than this
/// sleeps instead of burning its core.
const SPIN: Duration = Duration::from_micros(50);

/// How long a helper spins after a wake that found its job already taken
/// back: the caller that posted it is running that job itself, for about
/// as long as its own part took, and will likely post the next part when
/// done. A helper that slept again at once would be asleep for that post
/// too, and where waking it takes longer than a part (the scheduler woke
/// it on the caller's own CPU, as seen on virtual machines), every later
/// part would be taken back the same way: a product repeated on two
/// threads ran at one thread's speed for as long as the caller kept
/// posting (`bench -- repeat`).
const SPIN_AFTER_MISS: Duration = Duration::from_millis(1);

/// Spins until `ready()` or for [`SPIN`]; returns whether it became ready.
fn spin_until(ready: impl Fn() -> bool) -> bool {
    spin_for(SPIN, ready)
}

/// How long a waiting thread spins before it starts yielding its core
/// between its checks ([`spin_for`]). Where every core is busy (another
/// process, or more threads than cores), a thread that spins holds a core
/// that the thread it waits for, or the caller it should take work from,
/// could run on; one that yields gives it up to any thread that is ready,
/// and is back at once where none is. On AMD EPYC family 25 model 17 (2
/// cores) beside one busy-looping thread, `bench -- mlp --load 1` took
/// 5.5–5.8 ms a step against 7.0–7.3 spinning throughout, `sparse_vd`
/// 5.7–5.9 against 7.2–7.3 and `conv` 8.9–9.9 against 11.3–11.9; idle, the
/// workloads were within 2 % either way (`docs/benchmarks.md`, "Threads and
/// a competing load").
const YIELD_AFTER: Duration = Duration::from_micros(5);

/// Spins until `ready()` or for `limit`, yielding the core between checks
/// after [`YIELD_AFTER`]; returns whether it became ready.
fn spin_for(limit: Duration, ready: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        let spun = start.elapsed();
        if spun > limit {
            return ready();
        }
        if spun > YIELD_AFTER {
            std::thread::yield_now();
        }
    }
}

/// The most threads the pool runs (the caller and `MAX_THREADS - 1` helpers).
pub(crate) const MAX_THREADS: usize = 256;

/// A helper thread: its mailbox (at most one job, posted only by the
/// caller that claimed it) and the claim.
struct Helper {
    slot: Mutex<Slot>,
    /// The CPU the caller ran on when it posted the job (-1: unknown).
    caller_cpu: std::sync::atomic::AtomicI32,
    /// Set (after the job is in the slot) when a job is waiting, so the
    /// spinning helper polls an atomic rather than the lock.
    posted: AtomicBool,
    wake: Condvar,
    /// Held by the caller that posts to this helper, from the claim until
    /// its job has finished or been taken back.
    claimed: AtomicBool,
}

struct Slot {
    job: Option<Job>,
    /// The helper is waiting on `wake` (it stopped spinning).
    sleeping: bool,
}

impl Helper {
    fn post(&self, job: Job) {
        self.caller_cpu.store(cpu::current(), Ordering::Relaxed);
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        slot.job = Some(job);
        let sleeping = std::mem::replace(&mut slot.sleeping, false);
        self.posted.store(true, Ordering::Release);
        drop(slot);
        if sleeping {
            self.wake.notify_one();
        }
    }

    /// The job posted to this helper if it has not started it yet.
    fn take_back(&self) -> Option<Job> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let job = slot.job.take();
        if job.is_some() {
            self.posted.store(false, Ordering::Relaxed);
        }
        job
    }

    /// The helper thread's loop: spin for a job, else sleep until one
    /// comes; after a wake that finds none (taken back by the caller, or
    /// a spurious wake), spin for [`SPIN_AFTER_MISS`] before sleeping
    /// again.
    fn serve(&self) -> ! {
        let mut spin = SPIN;
        loop {
            spin_for(spin, || self.posted.load(Ordering::Acquire));
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.job.is_none() {
                slot.sleeping = true;
                slot = self.wake.wait(slot).unwrap_or_else(PoisonError::into_inner);
                // (a post clears the flag; a spurious wake leaves it set)
                slot.sleeping = false;
            }
            match slot.job.take() {
                Some(job) => {
                    self.posted.store(false, Ordering::Relaxed);
                    drop(slot);
                    spin = SPIN;
                    // never unwinds: `run_jobs` wraps each job in catch_unwind
                    cpu::away_from(self.caller_cpu.load(Ordering::Relaxed), job);
                }
                // woken with its job taken back (or spuriously)
                None => spin = SPIN_AFTER_MISS,
            }
        }
    }
}

/// Keeping a helper off its caller's CPU. On the 2-core virtual machines
/// this project runs on, the scheduler at times wakes a helper on the CPU
/// of the caller that posted its job and leaves the two there while the
/// other CPU idles, for tens of milliseconds: every product of a round ran
/// at one thread's speed (`bench -- repeat`: 9 to 17 rounds of 30 on AMD
/// EPYC family 26 model 2, the two threads on one CPU in each slow round
/// and on two in each fast one). A helper that starts a job on the CPU its
/// caller posted it from sets its own affinity mask to the process's CPUs
/// less that one for the job's time, so that the kernel moves it at once to
/// another allowed CPU (the caller's thread is the user's, and is left
/// alone).
mod cpu {
    /// `cpu_set_t`: 1024 bits.
    pub(super) type Mask = [u64; 16];

    #[cfg(target_os = "linux")]
    mod sys {
        use super::Mask;
        unsafe extern "C" {
            fn sched_getcpu() -> i32;
            fn sched_getaffinity(pid: i32, size: usize, mask: *mut Mask) -> i32;
            fn sched_setaffinity(pid: i32, size: usize, mask: *const Mask) -> i32;
        }
        pub(super) fn current() -> i32 {
            // SAFETY: no arguments; returns -1 on failure
            unsafe { sched_getcpu() }
        }
        /// The affinity mask of the process's main thread, as it is now.
        pub(super) fn process() -> Option<Mask> {
            let pid = i32::try_from(std::process::id()).ok()?;
            let mut mask = [0u64; 16];
            // SAFETY: `mask` is a writable `cpu_set_t` of the size given;
            // the process id names its main thread
            let ok = unsafe { sched_getaffinity(pid, size_of::<Mask>(), &mut mask) } == 0;
            ok.then_some(mask)
        }
        /// Sets the calling thread's affinity mask.
        pub(super) fn set(mask: &Mask) -> bool {
            // SAFETY: `mask` is a `cpu_set_t` of the size given; pid 0 is
            // the calling thread, which only moves between allowed CPUs
            unsafe { sched_setaffinity(0, size_of::<Mask>(), mask) == 0 }
        }
    }

    #[cfg(not(target_os = "linux"))]
    mod sys {
        use super::Mask;
        pub(super) fn current() -> i32 {
            -1
        }
        pub(super) fn process() -> Option<Mask> {
            None
        }
        pub(super) fn set(_: &Mask) -> bool {
            false
        }
    }

    /// The CPU the calling thread runs on, or -1 where that is unknown.
    pub(super) fn current() -> i32 {
        sys::current()
    }

    /// `mask` without `cpu`, unless that leaves no CPU (or `cpu` is not in
    /// it, or out of its range).
    pub(super) fn without(mask: &Mask, cpu: i32) -> Option<Mask> {
        let cpu = usize::try_from(cpu).ok()?;
        let (word, bit) = (cpu / 64, 1u64 << (cpu % 64));
        if mask.get(word)? & bit == 0 {
            return None;
        }
        let mut out = *mask;
        out[word] &= !bit;
        out.iter().any(|&w| w != 0).then_some(out)
    }

    /// Runs `job` off `caller`'s CPU: if this thread is on it, for the
    /// job's time its mask is the process's CPUs as its main thread has
    /// them now (so that a restriction the process got after the helper
    /// started holds) less the caller's, unless that leaves none; after
    /// the job, the process's CPUs again, so that a helper is never kept
    /// from a CPU that a later job could use (the move has been made, and
    /// the thread stays where it is until the scheduler moves it).
    pub(super) fn away_from(caller: i32, job: impl FnOnce()) {
        let all = if caller >= 0 && current() == caller {
            sys::process()
        } else {
            None
        };
        let moved = all
            .as_ref()
            .and_then(|all| without(all, caller))
            .is_some_and(|mask| sys::set(&mask));
        job();
        if let (true, Some(all)) = (moved, all) {
            sys::set(&all);
        }
    }
}

/// Helper `i`, started on first use; `None` if its thread could not be started.
fn helper(i: usize) -> Option<&'static Helper> {
    static HELPERS: [OnceLock<Option<&'static Helper>>; MAX_THREADS - 1] =
        [const { OnceLock::new() }; MAX_THREADS - 1];
    *HELPERS.get(i)?.get_or_init(|| {
        let helper: &'static Helper = Box::leak(Box::new(Helper {
            slot: Mutex::new(Slot {
                job: None,
                sleeping: false,
            }),
            caller_cpu: std::sync::atomic::AtomicI32::new(-1),
            posted: AtomicBool::new(false),
            wake: Condvar::new(),
            claimed: AtomicBool::new(false),
        }));
        std::thread::Builder::new()
            .name(format!("bayesgrad-helper-{i}"))
            .spawn(move || helper.serve())
            .ok()
            .map(|_| helper)
    })
}

/// The thread count in use; 0 until first read.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// The number of threads parallel kernels use (the caller and its
/// helpers): `BAYESGRAD_THREADS` if set, else the machine's available
/// parallelism, until [`set_threads`] changes it.
pub(crate) fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = threads_from_env(std::env::var("BAYESGRAD_THREADS").ok().as_deref());
            // a concurrent set_threads wins
            match THREADS.compare_exchange(0, n, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => n,
                Err(set) => set,
            }
        }
        n => n,
    }
}

/// The thread count for a `BAYESGRAD_THREADS` value: a number from 1 to
/// [`MAX_THREADS`], else (unset, or a value that is not one, which is
/// reported once on stderr) the machine's available parallelism.
fn threads_from_env(value: Option<&str>) -> usize {
    let machine = || {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_THREADS)
    };
    match value.map(|v| v.trim().parse::<usize>()) {
        None => machine(),
        Some(Ok(n)) if (1..=MAX_THREADS).contains(&n) => n,
        Some(_) => {
            let n = machine();
            eprintln!(
                "bayesgrad: BAYESGRAD_THREADS={:?} is not a thread count from 1 to {MAX_THREADS}; using {n}",
                value.unwrap_or_default()
            );
            n
        }
    }
}

/// Sets the thread count (see [`threads`]); takes effect for the next
/// parallel kernel on every thread.
pub(crate) fn set_threads(n: usize) -> Result<(), String> {
    if !(1..=MAX_THREADS).contains(&n) {
        return Err(format!("a thread count from 1 to {MAX_THREADS}, got {n}"));
    }
    THREADS.store(n, Ordering::Relaxed);
    Ok(())
}

/// Held by every test that sets the thread count or depends on it: tests
/// run on several threads at once, and one test's `set_threads` would
/// otherwise change the count under another (or restore a count it read
/// while a third test had changed it).
#[cfg(test)]
pub(crate) fn thread_count_held() -> std::sync::MutexGuard<'static, ()> {
    static HELD: Mutex<()> = Mutex::new(());
    HELD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Claims up to `want` idle helpers (of the first `threads() - 1`).
/// Concurrent callers share the pool: each gets the helpers free at that
/// moment, and runs the rest of its work itself.
fn claim(want: usize, out: &mut Vec<&'static Helper>) {
    let pool = threads().saturating_sub(1);
    for i in 0..pool {
        if out.len() == want {
            return;
        }
        if let Some(h) = helper(i)
            && !h.claimed.swap(true, Ordering::Acquire)
        {
            out.push(h);
        }
    }
}

/// A job's completion: its outcome, and a flag set once the outcome is written.
struct Finished {
    done: AtomicBool,
    outcome: Mutex<Option<std::thread::Result<()>>>,
}

/// Runs every job (each wrapped in [`vectorized`] by its maker) and
/// returns when all are done: the first on this
/// thread, the others on idle helpers (or here, if none is idle). A job a
/// helper has not started by the time this thread is done with its own is
/// taken back and run here, so a helper that the OS has not scheduled
/// (another process busy on its core) never holds the caller up. A panic
/// in any job is re-raised here after all have finished.
fn run_jobs<'a>(mut jobs: Vec<Box<dyn FnOnce() + Send + 'a>>) {
    let mut helpers = Vec::new();
    if jobs.len() > 1 {
        claim(jobs.len() - 1, &mut helpers);
    }
    if helpers.is_empty() {
        for job in jobs {
            job();
        }
        return;
    }
    let finished: Vec<Finished> = (0..helpers.len())
        .map(|_| Finished {
            done: AtomicBool::new(false),
            outcome: Mutex::new(None),
        })
        .collect();
    let waiter = std::thread::current();
    // (a tier a test forces on this thread holds for its jobs on the
    // helpers too: each job enters `vectorized` where it runs)
    #[cfg(test)]
    let forced = FORCED.get();
    let mine: Vec<_> = jobs.drain(..jobs.len() - helpers.len()).collect();
    for ((helper, job), finished) in helpers.iter().zip(jobs).zip(&finished) {
        let waiter = waiter.clone();
        let job: Box<dyn FnOnce() + Send + '_> = Box::new(move || {
            // (restored after: the caller may take the job back and run it)
            #[cfg(test)]
            let before = FORCED.replace(forced);
            let outcome = catch_unwind(AssertUnwindSafe(job));
            #[cfg(test)]
            FORCED.set(before);
            *finished
                .outcome
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(outcome);
            // `finished` may be gone as soon as `done` is seen set: the
            // wake below uses the job's own handle of the waiting thread.
            finished.done.store(true, Ordering::Release);
            waiter.unpark();
        });
        // SAFETY: the job borrows from this stack frame and from the
        // caller's ('a). It is erased to 'static only to cross to a helper
        // thread; this function does not return (or unwind: its own jobs
        // run under catch_unwind) before each posted job is either taken
        // back and run here or has set its `done` flag after its last use
        // of a borrow, so no borrow outlives the data it points to.
        // `tests::a_helper_job_finishes_before_run_jobs_returns` checks it.
        let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(job) };
        helper.post(job);
    }
    let own = catch_unwind(AssertUnwindSafe(|| {
        for job in mine {
            job();
        }
    }));
    for (helper, finished) in helpers.iter().zip(&finished) {
        if let Some(job) = helper.take_back() {
            job(); // sets `done`; never unwinds
        }
        if !spin_until(|| finished.done.load(Ordering::Acquire)) {
            while !finished.done.load(Ordering::Acquire) {
                std::thread::park();
            }
        }
        helper.claimed.store(false, Ordering::Release);
    }
    if let Err(payload) = own {
        resume_unwind(payload);
    }
    for finished in finished {
        if let Some(Err(payload)) = finished
            .outcome
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
        {
            resume_unwind(payload);
        }
    }
}

/// Runs `a` on this thread and `b` on an idle helper (or here), both
/// through [`vectorized`], and returns when both are done. A panic in
/// either is re-raised here after both have finished.
pub(crate) fn join(a: impl FnOnce() + Send, b: impl FnOnce() + Send) {
    if threads() == 1 {
        vectorized(a);
        vectorized(b);
        return;
    }
    // each closure goes into `vectorized` before it is boxed, so that its
    // body is compiled (inlined) with the wider instructions
    run_jobs(vec![
        Box::new(
            #[inline(always)]
            move || vectorized(a),
        ),
        Box::new(
            #[inline(always)]
            move || vectorized(b),
        ),
    ]);
}

/// `f(x)` through [`vectorized`]. Every call with the same `f` (and `T`)
/// runs one compiled body of `f` for each instruction set: the closures
/// of [`vectorized`] and [`join`] are each a type of their own, compiled
/// (inlined) apart for each instruction set at each call, so a large body
/// called for a whole and for two halves was compiled nine times. Never
/// inlined: its body holds `f`'s for the baseline instruction set, which
/// would otherwise be copied into every caller again.
#[inline(never)]
pub(crate) fn vectorized_with<T, G: Fn(T)>(f: &G, x: T) {
    vectorized(
        #[inline(always)]
        move || f(x),
    )
}

/// [`join`] of `f(a)` and `f(b)` through [`vectorized_with`]: one body of
/// `f` for each instruction set, shared with the other calls of
/// [`vectorized_with`] with the same `f`.
pub(crate) fn join_with<T: Send, G: Fn(T) + Sync>(f: &G, a: T, b: T) {
    if threads() == 1 {
        vectorized_with(f, a);
        vectorized_with(f, b);
        return;
    }
    run_jobs(vec![
        Box::new(move || vectorized_with(f, a)),
        Box::new(move || vectorized_with(f, b)),
    ]);
}

/// Runs `f(i)` for every `i in 0..parts` on up to `parts` threads.
pub(crate) fn par_for(parts: usize, f: impl Fn(usize) + Sync) {
    let f = &f;
    let job = |i: usize| -> Box<dyn FnOnce() + Send + '_> {
        Box::new(
            #[inline(always)]
            move || vectorized(|| f(i)),
        )
    };
    run_jobs((0..parts).map(job).collect());
}

/// Calls `f(start, chunks)` on contiguous parts of the `P` slices `outs`,
/// the same part of each, for work that is costly per element (from 64
/// elements a part, where [`par_fill`] waits for [`PARALLEL_MIN`]). The
/// parts, [`PIECES_PER_THREAD`] for each thread, are claimed one after
/// another by every thread as it becomes free: a thread whose core the OS
/// shares with another process does fewer of them, where with one equal
/// share each the others would wait for it. `f` must give each element a
/// value that does not depend on the part it falls in, so that the result
/// does not depend on the split.
///
/// # Panics
///
/// If the slices differ in length: the tail of a longer one would be
/// handed to no call, and a caller that writes every element it is handed
/// (the sampling op's backward fills spare capacity so) would leave it
/// unwritten.
pub(crate) fn par_fill_costly<T: Send, const P: usize>(
    outs: [&mut [T]; P],
    f: impl Fn(usize, [&mut [T]; P]) + Sync,
) {
    let len = outs.first().map_or(0, |o| o.len());
    assert!(
        outs.iter().all(|o| o.len() == len),
        "par_fill_costly: slices of different lengths"
    );
    let workers = threads().min(len / 64).max(1);
    if workers == 1 {
        f(0, outs);
        return;
    }
    // parts of at least 64 elements, a multiple of 64 long but the last
    let pieces = (workers * PIECES_PER_THREAD).min(len / 64);
    let step = len.div_ceil(pieces).next_multiple_of(64);
    let mut each = outs.map(|o| o.chunks_mut(step));
    let chunks: Vec<Mutex<[&mut [T]; P]>> = (0..len.div_ceil(step))
        .map(|_| Mutex::new(each.each_mut().map(|c| c.next().unwrap_or_default())))
        .collect();
    let next = AtomicUsize::new(0);
    par_for(workers, |_| {
        loop {
            let p = next.fetch_add(1, Ordering::Relaxed);
            let Some(chunk) = chunks.get(p) else { return };
            let mut chunk = chunk.lock().unwrap_or_else(PoisonError::into_inner);
            f(p * step, chunk.each_mut().map(|c| &mut **c));
        }
    });
}

/// The parts [`par_fill_costly`] makes for each thread.
const PIECES_PER_THREAD: usize = 8;

/// Calls `f(start, chunk)` on `out` (one call for short slices; two
/// halves on two threads for long ones).
pub(crate) fn par_fill<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    // one closure for every part, so that `f` is compiled once for each
    // instruction set (`identity` only lets the closure carry its
    // attribute)
    let part = std::convert::identity(
        #[inline(always)]
        |(start, chunk): (usize, &mut [T])| f(start, chunk),
    );
    match halves(out.len(), PARALLEL_MIN) {
        None => vectorized_with(&part, (0, out)),
        Some(mid) => {
            let (a, b) = out.split_at_mut(mid);
            join_with(&part, (0, a), (mid, b));
        }
    }
}

/// Where [`par_fill`] (with `min` = [`PARALLEL_MIN`]) cuts `len` elements
/// into two parts, one a thread: at `len / 2` from `min` elements on,
/// nowhere below. Ops that draw their own random numbers a part at a time
/// cut where it does, so that each part's stream starts where the part of
/// a tensor of draws does.
pub(crate) fn halves(len: usize, min: usize) -> Option<usize> {
    (len >= min).then_some(len / 2)
}

/// Outputs made of `count` equal consecutive blocks, one per item, that
/// [`par_blocks`] splits between two threads at an item boundary: a
/// mutable slice (which may be empty: no output), or a pair of them.
pub(crate) trait Blocks: Send + Sized {
    /// The first `mid` items' blocks and the rest.
    fn split_blocks(self, count: usize, mid: usize) -> (Self, Self);
}

impl<T: Send> Blocks for &mut [T] {
    fn split_blocks(self, count: usize, mid: usize) -> (Self, Self) {
        let block = self.len().checked_div(count).unwrap_or(0);
        assert_eq!(block * count, self.len(), "par_blocks: uneven blocks");
        self.split_at_mut(mid * block)
    }
}

/// No output: the items only produce the two results.
impl Blocks for () {
    fn split_blocks(self, _count: usize, _mid: usize) -> (Self, Self) {
        ((), ())
    }
}

impl<A: Blocks, B: Blocks> Blocks for (A, B) {
    fn split_blocks(self, count: usize, mid: usize) -> (Self, Self) {
        let (a0, a1) = self.0.split_blocks(count, mid);
        let (b0, b1) = self.1.split_blocks(count, mid);
        ((a0, b0), (a1, b1))
    }
}

/// Runs `f(items, their_blocks)` over `count` items (the images of a
/// batch, say) whose outputs are `data`: when `work` (a cost estimate of
/// all items, in elementwise operations) is at least [`PARALLEL_MIN`], as
/// two halves split at item `count / 2` on two threads; otherwise as one
/// call on everything and one on nothing. Those are [`par_fill`]'s parts,
/// so an item's part starts where `par_fill`'s would. Returns the two
/// results, first part first.
pub(crate) fn par_blocks<D: Blocks, R: Send>(
    data: D,
    count: usize,
    work: usize,
    f: impl Fn(Range<usize>, D) -> R + Sync,
) -> (R, R) {
    // one closure for every part, as in `par_fill`
    let part = std::convert::identity(
        #[inline(always)]
        |(items, data, result): (Range<usize>, D, &mut Option<R>)| *result = Some(f(items, data)),
    );
    let (mut first, mut second) = (None, None);
    if work < PARALLEL_MIN || count < 2 {
        let (all, none) = data.split_blocks(count, count);
        vectorized_with(&part, (0..count, all, &mut first));
        vectorized_with(&part, (count..count, none, &mut second));
    } else {
        let mid = count / 2;
        let (a, b) = data.split_blocks(count, mid);
        join_with(&part, (0..mid, a, &mut first), (mid..count, b, &mut second));
    }
    first
        .zip(second)
        .expect("both parts ran before this returns")
}

/// A new tensor buffer of `len` elements written by `f(start, chunk)` over
/// the chunks [`par_fill`] hands out, without zero-filling it first, and
/// starting on a cache line when large ([`Storage::build`]).
///
/// # Safety
/// `f` must initialize every element of every chunk it is given (if it
/// panics instead, the buffer is dropped without being read).
pub(crate) unsafe fn par_new<F: Element>(
    len: usize,
    f: impl Fn(usize, &mut [MaybeUninit<F>]) + Sync,
) -> Storage<F> {
    // SAFETY: `par_fill` gives every one of the `len` elements to `f`,
    // which initializes it (the caller's contract).
    unsafe { Storage::build(len, |out| par_fill(out, f)) }
}

/// [`par_new`] with each chunk cut further at the multiples of `seg`:
/// `f(at, part)` for consecutive parts, none of which crosses a multiple
/// of `seg` (`at` is the index of a part's first element), so that a part
/// lines up with one period of a source that repeats every `seg` elements
/// (a broadcast row, a tiled batch). `seg` must be at least 1 unless
/// `len` is 0.
///
/// # Safety
/// `f` must initialize every element of every part it is given (as for
/// [`par_new`]).
#[inline(always)]
pub(crate) unsafe fn par_new_in_segments<F: Element>(
    len: usize,
    seg: usize,
    f: impl Fn(usize, &mut [MaybeUninit<F>]) + Sync,
) -> Storage<F> {
    // SAFETY: the parts cover each chunk without gaps, and `f` initializes
    // every element of each (the caller's contract).
    unsafe {
        par_new(
            len,
            #[inline(always)]
            |start, chunk| {
                let mut done = 0;
                while done < chunk.len() {
                    let at = start + done;
                    let part = (seg - at % seg).min(chunk.len() - done);
                    f(at, &mut chunk[done..done + part]);
                    done += part;
                }
            },
        )
    }
}

/// `sum_i term(a_i, b_i)`, accumulated in eight lanes (so that it
/// vectorizes), on two threads for long slices. The slices may hold
/// another type than the sum (`f32` gradients and `f64` partials, say).
pub(crate) fn par_sum2<A: Copy + Sync, B: Copy + Sync, F: Element>(
    a: &[A],
    b: &[B],
    term: impl Fn(A, B) -> F + Sync,
) -> F {
    debug_assert_eq!(a.len(), b.len(), "par_sum2: slices of different lengths");
    let (lo, hi) = par_blocks(
        (),
        a.len(),
        a.len(),
        #[inline(always)]
        |items, ()| {
            // The terms of a block go to a buffer first: a plain map loop
            // vectorizes, a reduction through `term` does not.
            const BLOCK: usize = PAIRWISE_BLOCK;
            let mut buf = [F::zero(); BLOCK];
            let (a, b) = (&a[items.clone()], &b[items]);
            let mut sum = Pairwise::new();
            for (x, y) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
                let buf = &mut buf[..x.len()];
                for ((t, &x), &y) in buf.iter_mut().zip(x).zip(y) {
                    *t = term(x, y);
                }
                sum.add(sum_lanes(buf));
            }
            sum.total()
        },
    );
    lo + hi
}

/// The length of the blocks that [`sum_pairwise`] and [`Pairwise`] sum in
/// eight lanes before combining them pairwise.
pub(crate) const PAIRWISE_BLOCK: usize = 256;

/// `sum_i x_i`, pairwise over blocks of [`PAIRWISE_BLOCK`] summed in eight
/// lanes: vectorized, with an error that grows with `log n`, not `n`
/// (10⁶ copies of 0.1f32 sum to 100000 within 1e-6 relative, where one
/// running sum per lane is 9e-4 off).
pub(crate) fn sum_pairwise<F: Element>(x: &[F]) -> F {
    if x.len() <= PAIRWISE_BLOCK {
        return sum_lanes(x);
    }
    let half = x.len().div_ceil(2 * PAIRWISE_BLOCK) * PAIRWISE_BLOCK;
    let (a, b) = x.split_at(half.min(x.len()));
    sum_pairwise(a) + sum_pairwise(b)
}

/// [`sum_pairwise`] with its two halves on two threads when the slice is
/// long: the same split, so the same bits.
pub(crate) fn par_sum_pairwise<F: Element>(x: &[F]) -> F {
    if x.len() < PARALLEL_MIN {
        return sum_pairwise(x);
    }
    let half = x.len().div_ceil(2 * PAIRWISE_BLOCK) * PAIRWISE_BLOCK;
    let (a, b) = x.split_at(half.min(x.len()));
    let (mut first, mut second) = (F::zero(), F::zero());
    join(|| first = sum_pairwise(a), || second = sum_pairwise(b));
    first + second
}

/// [`par_sum_pairwise`] of the `len` values that `fill(start, block)`
/// writes a block of at most [`PAIRWISE_BLOCK`] at a time (the block's
/// values from position `start` on), without a buffer of all of them: the
/// same blocks, the same pairwise tree over their sums and the same split
/// between the threads, so the same bits as writing the values out and
/// summing them. For a gradient summed to a single value (a parameter
/// broadcast to every position), whose terms were a tensor written and
/// read once.
///
/// # Safety
/// `fill` must initialize every element of each block it is given.
pub(crate) unsafe fn par_sum_filled<F: Element>(
    len: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<F>]) + Sync,
) -> F {
    let blocks = len.div_ceil(PAIRWISE_BLOCK);
    let mut sums = vec![F::zero(); blocks];
    let part = std::convert::identity(
        #[inline(always)]
        |(first, sums): (usize, &mut [F])| {
            let mut block = [MaybeUninit::<F>::uninit(); PAIRWISE_BLOCK];
            for (k, sum) in sums.iter_mut().enumerate() {
                let start = (first + k) * PAIRWISE_BLOCK;
                let block = &mut block[..PAIRWISE_BLOCK.min(len - start)];
                fill(start, block);
                // SAFETY: `fill` initialized every element of the block
                // (the caller's contract)
                let block = unsafe { &*(block as *const [MaybeUninit<F>] as *const [F]) };
                *sum = sum_lanes(block);
            }
        },
    );
    // `par_sum_pairwise`'s split: the first ⌈blocks / 2⌉ blocks and the rest
    let half = blocks.div_ceil(2);
    if len < PARALLEL_MIN {
        vectorized_with(&part, (0, &mut sums[..]));
    } else {
        let (a, b) = sums.split_at_mut(half);
        join_with(&part, (0, a), (half, b));
    }
    pairwise_total(&sums)
}

/// The sum of block sums over [`sum_pairwise`]'s tree: the first `⌈n /
/// 2⌉` and the rest, each summed so, then added (a block's sum alone is
/// itself; none, 0).
fn pairwise_total<F: Element>(sums: &[F]) -> F {
    match sums {
        [] => F::zero(),
        [one] => *one,
        _ => {
            let (a, b) = sums.split_at(sums.len().div_ceil(2));
            pairwise_total(a) + pairwise_total(b)
        }
    }
}

/// Adds a stream of block sums pairwise: block sums of equal rank are
/// combined as they arrive (a binary counter), so `n` blocks cost
/// `O(log n)` memory and `O(log n)` rounding per value.
pub(crate) struct Pairwise<F> {
    levels: [Option<F>; 48],
}

impl<F: Element> Pairwise<F> {
    pub(crate) fn new() -> Self {
        Pairwise { levels: [None; 48] }
    }
    pub(crate) fn add(&mut self, mut s: F) {
        for level in self.levels.iter_mut() {
            match level.take() {
                Some(t) => s = t + s,
                None => {
                    *level = Some(s);
                    return;
                }
            }
        }
        // 2^48 blocks: unreachable in memory; keep the value anyway
        let last = self.levels.len() - 1;
        self.levels[last] = Some(s);
    }
    pub(crate) fn total(&self) -> F {
        self.levels
            .iter()
            .flatten()
            .fold(F::zero(), |acc, &v| acc + v)
    }
}

/// `sum_i x_i` in eight lanes (so that it vectorizes).
#[inline(always)]
pub(crate) fn sum_lanes<F: Element>(x: &[F]) -> F {
    let mut acc = [F::zero(); 8];
    let lanes = x.chunks_exact(8);
    let rest = lanes.remainder().iter().fold(F::zero(), |s, &v| s + v);
    for c in lanes {
        for j in 0..8 {
            acc[j] = acc[j] + c[j];
        }
    }
    acc.iter().fold(rest, |s, &v| s + v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_fill_costly_hands_every_element_once() {
        let _held = thread_count_held();
        let original = threads();
        set_threads(2).unwrap();
        for len in [0, 1, 63, 64, 127, 128, 130, 1000, 100_003] {
            let (mut a, mut b) = (vec![0usize; len], vec![0usize; len]);
            let calls = AtomicUsize::new(0);
            par_fill_costly([&mut a[..], &mut b[..]], |start, [a, b]| {
                calls.fetch_add(1, Ordering::Relaxed);
                for (i, (a, b)) in a.iter_mut().zip(b.iter_mut()).enumerate() {
                    *a += start + i;
                    *b += 1;
                }
            });
            assert!(a.iter().enumerate().all(|(i, &v)| v == i), "length {len}");
            assert!(b.iter().all(|&v| v == 1), "length {len}");
            // a long slice is cut into more parts than there are threads,
            // which the threads claim as they become free
            if len == 100_003 {
                assert!(calls.into_inner() > 2);
            }
        }
        set_threads(original).unwrap();
    }

    #[test]
    #[should_panic(expected = "slices of different lengths")]
    fn par_fill_costly_refuses_slices_of_different_lengths() {
        let (mut a, mut b) = (vec![0.0; 1000], vec![0.0; 1200]);
        par_fill_costly([&mut a[..], &mut b[..]], |_, [a, b]| {
            a.fill(1.0);
            b.fill(1.0);
        });
    }

    #[test]
    fn simd_values_cap_the_tier() {
        let widest = Tier::from_env(None);
        assert!(widest.supported());
        assert_eq!(Tier::from_env(Some("avx512")), widest);
        assert_eq!(Tier::from_env(Some(" avx512 ")), widest);
        // a value that names no tier is reported and leaves no cap
        assert_eq!(Tier::from_env(Some("avx1024")), widest);
        let avx2 = Tier::from_env(Some("avx2"));
        assert!(avx2 >= Tier::Avx2Fma && avx2 >= widest && avx2.supported());
        assert_eq!(Tier::from_env(Some("portable")), Tier::Portable);
    }

    /// Kernels of each kind that [`vectorized`] compiles, on one tier:
    /// elementwise `f32` math, the implicit-derivative lanes in `f64`, a
    /// product small enough for the plain loops, and the normal sampler.
    /// Returns their bits.
    fn kernels_on(tier: Tier) -> Option<Vec<u64>> {
        use super::super::{fastmath, gemm, special};
        on_tier(tier, || {
            let xs: Vec<f32> = (0..4099)
                .map(|i| (i as f32 - 2049.0) * 0.0421 + if i % 7 == 0 { 1e-30 } else { 0.0 })
                .collect();
            let mut bits: Vec<u64> = Vec::new();
            for f in [fastmath::exp, fastmath::softplus, fastmath::sigmoid] {
                let ys: Vec<f32> = vectorized(|| xs.iter().map(|&x| f(x)).collect());
                bits.extend(ys.iter().map(|y| u64::from(y.to_bits())));
            }
            let ys: Vec<f32> = vectorized(|| xs.iter().map(|&x| fastmath::ln(x.abs())).collect());
            bits.extend(ys.iter().map(|y| u64::from(y.to_bits())));
            let a: Vec<f64> = (0..37).map(|i| 0.05 + 0.37 * i as f64).collect();
            let x: Vec<f64> = (0..37).map(|i| 0.01 + 0.29 * i as f64).collect();
            let u: Vec<f64> = (0..37).map(|i| (i as f64 + 0.5) / 37.0).collect();
            // draws on both branches of the Gamma derivative (x < a + 1:
            // series, x >= a + 1: continued fraction)
            let x_upper: Vec<f64> = a.iter().map(|a| a + 1.0 + 0.43 * a.sqrt()).collect();
            let mut g = vec![[0.0; 1]; 74];
            let (lower, upper) = g.split_at_mut(37);
            special::gamma_sample_grads(&a, &x, lower);
            special::gamma_sample_grads(&a, &x_upper, upper);
            let mut h = vec![[0.0; 2]; 37];
            special::beta_sample_grads(&a, &x, &u, &mut h);
            bits.extend(
                g.iter()
                    .flatten()
                    .chain(h.iter().flatten())
                    .map(|v| v.to_bits()),
            );
            let p: Vec<f32> = (0..15 * 13)
                .map(|i| ((i * 37) % 29) as f32 * 0.173 - 2.1)
                .collect();
            let q: Vec<f32> = (0..13 * 9)
                .map(|i| ((i * 11) % 23) as f32 * 0.311 - 3.3)
                .collect();
            let (pm, qm) = (
                gemm::MatRef::new(&p, 13, false),
                gemm::MatRef::new(&q, 9, false),
            );
            let r = gemm::gemm_new(15, 13, 9, pm, qm);
            bits.extend(r.iter().map(|v| u64::from(v.to_bits())));
            // pieces of whole pairs of sixteen, and one ending in a single
            // sixteen, which the AVX-512 code leaves to the AVX2 code
            let mut normals = super::super::random::NormalStream::new(7, 0);
            for len in [250, 20, 10, 256] {
                let piece = normals.next_piece(len);
                bits.extend(piece.iter().map(|v| u64::from(v.to_bits())));
            }
            // the lane forms of ln, exp and expm1 (multiply-adds in their
            // polynomials), from subnormals to 1e300
            let wide: Vec<[f64; 8]> = (0..400)
                .map(|i| {
                    std::array::from_fn(|l| (0.4387 * f64::from(i * 8 + l as i32) - 713.8).exp())
                })
                .collect();
            let lanes: Vec<[f64; 8]> = vectorized(|| {
                wide.iter()
                    .flat_map(|x| {
                        let small = x.map(|v| v.ln() * 0.1);
                        let (e, m1) = special::exp_and_exp_m1_lanes(&small);
                        let (ne, nm1) =
                            special::exp_and_exp_m1_nonpositive_lanes(&small.map(|v| -v.abs()));
                        [
                            special::ln_lanes(x),
                            e,
                            m1,
                            special::exp_m1_lanes(&small),
                            ne,
                            nm1,
                        ]
                    })
                    .collect()
            });
            bits.extend(lanes.iter().flatten().map(|v| v.to_bits()));
            // the f32 exponential from an f64 reduction, of -3e-158 to
            // -1.7e147 (half of them in (-87.3, 0), where it is normal)
            let narrow: Vec<[f32; 16]> = vectorized(|| {
                wide.chunks_exact(2)
                    .map(|x| {
                        special::exp_nonpositive_to_f32(
                            &x[0].map(|v| -v.sqrt() * 0.003),
                            &x[1].map(|v| -v.sqrt() * 0.003),
                        )
                    })
                    .collect()
            });
            bits.extend(narrow.iter().flatten().map(|v| u64::from(v.to_bits())));
            // the one-uniform draws of every kind, on one thread (below
            // PARALLEL_MIN), in both element types
            use super::super::random::{Unit, unit_draws};
            use rand::SeedableRng;
            for kind in Unit::ALL {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
                let x: Storage<f64> = unit_draws(kind, 3001, &mut rng);
                bits.extend(x.iter().map(|v| v.to_bits()));
                let x: Storage<f32> = unit_draws(kind, 3001, &mut rng);
                bits.extend(x.iter().map(|v| u64::from(v.to_bits())));
            }
            bits
        })
    }

    #[test]
    fn every_tier_gives_the_same_bits() {
        let portable = kernels_on(Tier::Portable).expect("every CPU runs the portable tier");
        for tier in [Tier::Avx2Fma, Tier::Avx512] {
            match kernels_on(tier) {
                Some(bits) => {
                    let first = bits.iter().zip(&portable).position(|(a, b)| a != b);
                    assert_eq!(first, None, "{tier:?} differs from the portable code");
                }
                None => eprintln!("skipped {tier:?}: not on this CPU"),
            }
        }
    }

    /// The values a block at a time, summed without their buffer: the bits
    /// of writing them out and summing them, at lengths around the block,
    /// the threads' split and blocks that do not divide the length.
    #[test]
    fn par_sum_filled_has_the_bits_of_the_values_summed() {
        let value = |i: usize| ((i * 37) % 101) as f32 * 0.013 - 0.6;
        for n in [
            0,
            1,
            255,
            256,
            257,
            600,
            PARALLEL_MIN - 1,
            PARALLEL_MIN,
            3 * PARALLEL_MIN + 77,
            1_000_000,
        ] {
            let x: Vec<f32> = (0..n).map(value).collect();
            // SAFETY: every element of each block is written
            let filled = unsafe {
                par_sum_filled(n, |start, block: &mut [MaybeUninit<f32>]| {
                    for (k, b) in block.iter_mut().enumerate() {
                        b.write(value(start + k));
                    }
                })
            };
            assert_eq!(filled.to_bits(), par_sum_pairwise(&x).to_bits(), "{n}");
        }
    }

    #[test]
    fn par_sum_pairwise_has_the_bits_of_sum_pairwise() {
        for n in [
            0,
            1,
            300,
            PARALLEL_MIN - 1,
            PARALLEL_MIN,
            3 * PARALLEL_MIN + 77,
        ] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37) % 101) as f32 * 0.013 - 0.6)
                .collect();
            let want = sum_pairwise(&x);
            assert_eq!(par_sum_pairwise(&x).to_bits(), want.to_bits(), "{n}");
            // and the split is the one sum_pairwise takes: a sum in order differs
            if n > PARALLEL_MIN {
                let plain = x.iter().fold(0.0f32, |s, &v| s + v);
                assert_ne!(
                    plain.to_bits(),
                    want.to_bits(),
                    "{n}: a sum that cannot tell"
                );
            }
        }
    }

    #[test]
    fn par_sum2_matches_the_plain_sum_on_one_and_two_threads() {
        for n in [0, 7, 300, 3 * PARALLEL_MIN + 5] {
            let a: Vec<f64> = (0..n).map(|i| ((i * 31) % 17) as f64 - 8.0).collect();
            let b: Vec<f64> = (0..n).map(|i| ((i * 7) % 5) as f64 * 0.5).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| x * y + 1.0).sum();
            let got = par_sum2(&a, &b, |x, y| x * y + 1.0);
            // integer and half-integer terms: every order of summation is exact
            assert_eq!(got, want, "n = {n}");
        }
    }

    #[test]
    fn par_blocks_parts_start_where_par_fills_do() {
        for n in [
            0,
            1,
            7,
            PARALLEL_MIN - 1,
            PARALLEL_MIN,
            3 * PARALLEL_MIN + 7,
        ] {
            let mut fill_starts = std::sync::Mutex::new(Vec::new());
            par_fill(&mut vec![0u8; n], |start, chunk| {
                if !chunk.is_empty() {
                    fill_starts.lock().unwrap().push(start);
                }
            });
            let mut out = vec![0usize; n];
            let (a, b) = par_blocks(out.as_mut_slice(), n, n, |items, block| {
                for (i, x) in items.clone().zip(block.iter_mut()) {
                    *x = i + 1;
                }
                (!items.is_empty()).then_some(items.start)
            });
            let mut block_starts: Vec<usize> = [a, b].into_iter().flatten().collect();
            block_starts.sort_unstable();
            let fill_starts = fill_starts.get_mut().unwrap();
            fill_starts.sort_unstable();
            assert_eq!(&block_starts, fill_starts, "n = {n}");
            assert!(out.iter().enumerate().all(|(i, &x)| x == i + 1), "n = {n}");
        }
    }

    #[test]
    fn par_fill_covers_every_element_once() {
        for n in [0, 1, PARALLEL_MIN - 1, PARALLEL_MIN, 3 * PARALLEL_MIN + 7] {
            let mut v = vec![0usize; n];
            par_fill(&mut v, |start, chunk| {
                for (i, x) in chunk.iter_mut().enumerate() {
                    *x += start + i + 1;
                }
            });
            assert!(v.iter().enumerate().all(|(i, &x)| x == i + 1), "n = {n}");
        }
    }

    #[test]
    fn nested_and_concurrent_joins_complete() {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut v = vec![0u64; 4 * PARALLEL_MIN];
                    for _ in 0..20 {
                        par_fill(&mut v, |start, chunk| {
                            let mut inner = vec![0u64; chunk.len()];
                            par_fill(&mut inner, |s, c| {
                                c.iter_mut()
                                    .enumerate()
                                    .for_each(|(i, x)| *x = (s + i) as u64)
                            });
                            for (i, x) in chunk.iter_mut().enumerate() {
                                *x = inner[i] + start as u64 + t;
                            }
                        });
                    }
                    v.iter().enumerate().all(|(i, &x)| x == i as u64 + t)
                })
            })
            .collect();
        assert!(threads.into_iter().all(|h| h.join().unwrap()));
    }

    #[test]
    fn joins_complete_past_the_spin_on_either_side() {
        let long = SPIN * 20;
        for round in 0..3 {
            // The helper half outlasts the caller's spin: the caller sleeps
            // and must be woken.
            let (mut a, mut b) = (0, 0);
            join(|| a = 1, || (std::thread::sleep(long), b = 2).1);
            assert_eq!((a, b), (1, 2), "round {round}");
            // The helper has been idle past its spin and sleeps: a new job
            // must wake it.
            std::thread::sleep(long);
            let (mut a, mut b) = (0, 0);
            join(|| (std::thread::sleep(long), a = 3).1, || b = 4);
            assert_eq!((a, b), (3, 4), "round {round}");
        }
    }

    /// The SAFETY argument of `run_jobs`: a job posted to a helper borrows
    /// the caller's stack, so `run_jobs` must not return before the job's
    /// last write, however late the helper runs it.
    #[test]
    fn a_helper_job_finishes_before_run_jobs_returns() {
        for delay in [Duration::ZERO, SPIN / 2, SPIN * 10] {
            for _ in 0..20 {
                let mut cells = vec![0u64; 4];
                let (first, rest) = cells.split_at_mut(1);
                let (second, rest) = rest.split_at_mut(1);
                let (third, fourth) = rest.split_at_mut(1);
                let slow = |cell: &mut [u64], v: u64| {
                    std::thread::sleep(delay);
                    cell[0] = v; // the last use of the borrow
                };
                run_jobs(vec![
                    Box::new(|| slow(first, 1)),
                    Box::new(|| slow(second, 2)),
                    Box::new(|| slow(third, 3)),
                    Box::new(|| slow(fourth, 4)),
                ]);
                assert_eq!(cells, [1, 2, 3, 4], "delay {delay:?}");
            }
        }
    }

    /// A tier forced on the calling thread holds for the parts of its work
    /// that helpers run: the tests that compare the tiers compare what each
    /// computes, parallel parts included (a helper on the process's tier
    /// would run them wider, and under `BAYESGRAD_SIMD=portable` a
    /// convolution forced to a wider tier would find no kernel there).
    #[test]
    fn a_forced_tier_holds_on_the_helpers() {
        let _held = thread_count_held();
        let original = threads();
        set_threads(2).unwrap();
        let caller = std::thread::current().id();
        let mut on_helper = false;
        // (a helper busy with another test's work leaves both parts here)
        for round in 0..50 {
            for tier in [Tier::Portable, Tier::Avx2Fma, Tier::Avx512] {
                let seen = Mutex::new(Vec::new());
                // every other round the helper is asleep when the parts are
                // posted and the caller's part is short, so that the caller
                // mostly takes the helper's part back and runs it itself
                let caller_waits = round % 2 == 0;
                if !caller_waits {
                    std::thread::sleep(SPIN_AFTER_MISS * 3);
                }
                on_tier(tier, || {
                    par_for(2, |i| {
                        if i == 0 && caller_waits {
                            // time for the helper to take its own part
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        let here = (std::thread::current().id(), super::tier());
                        seen.lock().unwrap().push(here);
                    });
                    // (also where the caller took a part back and ran it)
                    assert_eq!(super::tier(), tier, "the caller's tier changed");
                });
                let seen = seen.into_inner().unwrap();
                for &(_, ran) in &seen {
                    assert_eq!(ran, tier, "a part ran with another tier than the caller's");
                }
                on_helper |= seen.iter().any(|&(id, _)| id != caller);
            }
            if on_helper && round >= 10 {
                break;
            }
        }
        set_threads(original).unwrap();
        assert!(on_helper, "no part ran on a helper");
    }

    #[test]
    fn a_mask_without_a_cpu_keeps_the_others_and_never_empties() {
        let mut mask = [0u64; 16];
        mask[0] = 0b1011;
        mask[1] = 1;
        assert_eq!(
            cpu::without(&mask, 1).map(|m| (m[0], m[1])),
            Some((0b1001, 1))
        );
        assert_eq!(
            cpu::without(&mask, 64).map(|m| (m[0], m[1])),
            Some((0b1011, 0))
        );
        // a CPU outside the mask, or out of its range, or unknown
        assert_eq!(cpu::without(&mask, 2), None);
        assert_eq!(cpu::without(&mask, 5000), None);
        assert_eq!(cpu::without(&mask, -1), None);
        // the last CPU stays
        let one = [1u64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(cpu::without(&one, 0), None);
    }

    /// With the caller held on the CPU its helper last ran on, a part that
    /// runs on the helper runs on another CPU: a helper that starts a job
    /// on its caller's CPU leaves it (on a machine with one allowed CPU, or
    /// off Linux, there is nothing to check).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_helper_leaves_the_cpu_of_its_caller() {
        unsafe extern "C" {
            fn sched_getaffinity(pid: i32, size: usize, mask: *mut cpu::Mask) -> i32;
            fn sched_setaffinity(pid: i32, size: usize, mask: *const cpu::Mask) -> i32;
        }
        let _held = thread_count_held();
        let original = threads();
        set_threads(2).unwrap();
        let caller = std::thread::current().id();
        // the CPUs of the parts of two, the helper's when it ran one
        let parts = || {
            let seen = Mutex::new(Vec::new());
            par_for(2, |i| {
                if i == 0 {
                    // time for the helper to start its part
                    std::thread::sleep(Duration::from_micros(300));
                }
                seen.lock()
                    .unwrap()
                    .push((std::thread::current().id(), cpu::current()));
            });
            let seen = seen.into_inner().unwrap();
            seen.into_iter()
                .find(|&(id, _)| id != caller)
                .map(|(_, c)| c)
        };
        let mut mine = [0u64; 16];
        // SAFETY: a writable cpu_set_t of the size given, this thread
        let got = unsafe { sched_getaffinity(0, size_of::<cpu::Mask>(), &mut mine) };
        assert_eq!(got, 0);
        let set = |mask: &cpu::Mask| {
            // SAFETY: a cpu_set_t of the size given; this thread, moved
            // only between CPUs the process may use
            let done = unsafe { sched_setaffinity(0, size_of::<cpu::Mask>(), mask) };
            assert_eq!(done, 0);
        };
        let start = Instant::now();
        let helper_cpu = std::iter::repeat_with(parts)
            .take_while(|_| start.elapsed() < Duration::from_secs(3))
            .flatten()
            .next();
        let Some(target) = helper_cpu.filter(|&c| cpu::without(&mine, c).is_some()) else {
            set_threads(original).unwrap();
            return;
        };
        // this thread onto the helper's CPU alone
        let mut just_there = [0u64; 16];
        just_there[target as usize / 64] = 1 << (target % 64);
        set(&just_there);
        // (other tests running at once may hold the helper for a while:
        // parts until a hundred ran on it, or for three seconds)
        let (mut on_helper, mut shared) = (0, 0);
        let start = Instant::now();
        while on_helper < 100 && start.elapsed() < Duration::from_secs(3) {
            if let Some(ran) = parts() {
                on_helper += 1;
                shared += usize::from(ran == target);
            }
        }
        set(&mine);
        set_threads(original).unwrap();
        assert!(on_helper > 0, "no part ran on a helper");
        assert_eq!(
            shared, 0,
            "{shared} of {on_helper} helper parts ran on the caller's CPU"
        );
    }

    #[test]
    fn par_for_runs_every_part_once_on_any_thread_count() {
        let _held = thread_count_held();
        let original = threads();
        for t in [1, 2, 3, 5] {
            set_threads(t).unwrap();
            let counts: Vec<AtomicUsize> = (0..7).map(|_| AtomicUsize::new(0)).collect();
            par_for(7, |i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                counts.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                "{t} threads"
            );
        }
        set_threads(original).unwrap();
        assert!(set_threads(0).is_err() && set_threads(MAX_THREADS + 1).is_err());
    }

    #[test]
    fn the_thread_count_comes_from_the_environment_or_the_machine() {
        let machine = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(threads_from_env(None), machine);
        assert_eq!(threads_from_env(Some("3")), 3);
        assert_eq!(threads_from_env(Some(" 1 ")), 1);
        for bad in ["0", "-2", "many", "100000"] {
            assert_eq!(threads_from_env(Some(bad)), machine, "{bad}");
        }
    }

    #[test]
    fn a_panic_in_the_helper_half_reaches_the_caller_and_the_pool_survives() {
        let caught = catch_unwind(|| {
            join(|| {}, || panic!("helper half"));
        });
        assert!(caught.is_err());
        let mut v = vec![0u8; 2 * PARALLEL_MIN];
        par_fill(&mut v, |_, c| c.fill(1));
        assert!(v.iter().all(|&x| x == 1));
    }
}
