//! Output for the examples that print many lines: [`say!`] is `println!`
//! that does not panic when stdout closes early (`cargo run --example uci_wine | head`).

/// `println!` that ends the program quietly, with the shell's code for a
/// closed pipe, when stdout goes away (`| head`), where `println!`
/// would panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(141);
            }
            eprintln!("error: writing to stdout: {e}");
            std::process::exit(1);
        }
    }};
}
