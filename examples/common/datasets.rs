//! The two real tables the examples use, compiled into them from
//! `examples/data/` (sources and licences in `examples/data/README.md`).
//!
//! Parsing is strict: every row must have the table's number of columns,
//! every field must be a finite number, and the row count must be the
//! table's, so an edited or truncated file cannot pass for the data.

/// A CSV table with a header line: its numeric rows, each checked to have
/// `columns` finite fields, and `rows` of them.
fn parse(name: &str, text: &str, columns: usize, rows: usize) -> Vec<Vec<f64>> {
    let table: Vec<Vec<f64>> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let row: Vec<f64> = line
                .split(',')
                .map(|f| match f.trim().parse::<f64>() {
                    Ok(v) if v.is_finite() => v,
                    _ => panic!(
                        "{name}: row {} has a field '{f}' that is not a finite number",
                        i + 1
                    ),
                })
                .collect();
            assert_eq!(
                row.len(),
                columns,
                "{name}: row {} has {} fields",
                i + 1,
                row.len()
            );
            row
        })
        .collect();
    assert_eq!(table.len(), rows, "{name}: {} rows", table.len());
    table
}

/// A table of `N` features and a target in the last column.
fn features_and_target<const N: usize>(
    name: &str,
    text: &str,
    rows: usize,
) -> (Vec<[f64; N]>, Vec<f64>) {
    parse(name, text, N + 1, rows)
        .into_iter()
        .map(|r| (std::array::from_fn(|j| r[j]), r[N]))
        .unzip()
}

/// UCI wine-quality (red): 1599 wines, 11 physico-chemical features, and
/// the quality score (3 to 8) last.
#[allow(dead_code)]
pub fn winequality() -> (Vec<[f64; 11]>, Vec<f64>) {
    let text = include_str!("../data/winequality-red.csv");
    features_and_target("winequality-red.csv", text, 1599)
}

/// The diabetes table of Efron et al. (2004): 442 patients, 10 features
/// (centred and scaled as distributed with scikit-learn), and the disease
/// progression one year later.
#[allow(dead_code)]
pub fn diabetes() -> (Vec<[f64; 10]>, Vec<f64>) {
    let text = include_str!("../data/diabetes.csv");
    features_and_target("diabetes.csv", text, 442)
}
