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

/// UCI wine-quality (red): 1599 wines, 11 physico-chemical features, and
/// the quality score (3 to 8) last.
#[allow(dead_code)]
pub fn winequality() -> (Vec<[f64; 11]>, Vec<f64>) {
    let text = include_str!("../data/winequality-red.csv");
    parse("winequality-red.csv", text, 12, 1599)
        .into_iter()
        .map(|r| (std::array::from_fn(|j| r[j]), r[11]))
        .unzip()
}

/// The diabetes table of Efron et al. (2004): 442 patients, 10 features
/// (centred and scaled as distributed with scikit-learn), and the disease
/// progression one year later.
#[allow(dead_code)]
pub fn diabetes() -> (Vec<[f64; 10]>, Vec<f64>) {
    let text = include_str!("../data/diabetes.csv");
    parse("diabetes.csv", text, 11, 442)
        .into_iter()
        .map(|r| (std::array::from_fn(|j| r[j]), r[10]))
        .unzip()
}
