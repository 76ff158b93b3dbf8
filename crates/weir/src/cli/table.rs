//! Aligned-column tables and the small number formats the tables use.

use std::fmt::Write as _;

/// A table printed as aligned columns: a header row, then one row per item.
#[derive(Debug)]
pub struct Table {
    headers: Vec<String>,
    /// Columns aligned to the right (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers; a header starting with `>` is
    /// right-aligned (the `>` is not printed).
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers
                .iter()
                .map(|header| header.trim_start_matches('>').to_owned())
                .collect(),
            right: headers
                .iter()
                .map(|header| header.starts_with('>'))
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Appends one row; missing cells are empty, extra cells are dropped.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as text: columns two spaces apart, no trailing spaces.
    pub fn render(&self) -> String {
        let width = |cell: &str| cell.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|header| width(header)).collect();
        for row in &self.rows {
            for (column, cell) in row.iter().enumerate() {
                widths[column] = widths[column].max(width(cell));
            }
        }
        let mut text = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                if column > 0 {
                    line.push_str("  ");
                }
                let pad = widths[column] - width(cell);
                if self.right[column] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            let _ = writeln!(text, "{}", line.trim_end());
        }
        text
    }
}

/// `1536` → `1.5 KiB`.
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A rate per second: `0`, `0.25`, `12.5`, `1200`.
pub fn rate(per_s: f64) -> String {
    if per_s == 0.0 {
        "0".to_owned()
    } else if per_s < 10.0 {
        format!("{per_s:.2}")
    } else if per_s < 100.0 {
        format!("{per_s:.1}")
    } else {
        format!("{per_s:.0}")
    }
}

/// A duration in seconds for people: `0s`, `45s`, `12m05s`, `3h02m`, `2d04h`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "never".to_owned();
    }
    let total = seconds.max(0.0).ceil() as u64;
    let (days, hours, minutes, secs) = (
        total / 86_400,
        total / 3_600 % 24,
        total / 60 % 60,
        total % 60,
    );
    if days > 0 {
        format!("{days}d{hours:02}h")
    } else if hours > 0 {
        format!("{hours}h{minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m{secs:02}s")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut table = Table::new(&["NAME", ">PARTITIONS", "NOTE"]);
        table.row(vec!["orders".into(), "12".into(), String::new()]);
        table.row(vec!["é".into(), "3".into(), "x".into(), "dropped".into()]);
        table.row(vec!["short".into()]);
        assert_eq!(
            table.render(),
            "NAME    PARTITIONS  NOTE\n\
             orders          12\n\
             é                3  x\n\
             short\n"
        );
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(0.25), "0.25");
        assert_eq!(rate(12.345), "12.3");
        assert_eq!(rate(1234.5), "1234");
        assert_eq!(duration(0.0), "0s");
        assert_eq!(duration(44.2), "45s");
        assert_eq!(duration(725.0), "12m05s");
        assert_eq!(duration(3.0 * 3600.0 + 120.0), "3h02m");
        assert_eq!(duration(2.0 * 86_400.0 + 4.0 * 3600.0), "2d04h");
        assert_eq!(duration(f64::INFINITY), "never");
    }
}
