//! How commands print: tables for people (`--output table`, the default) or the API's own
//! JSON for scripts (`--output json`).
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

/// `--output`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Tables and sentences, for people.
    #[default]
    Table,
    /// The API's answer as JSON, for scripts.
    Json,
}

pub fn json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// A table with these columns; an empty one says `none`.
pub fn table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.iter().copied());
    let mut n = 0;
    for r in rows {
        t.add_row(r);
        n += 1;
    }
    if n == 0 {
        println!("none");
    } else {
        println!("{t}");
    }
}

/// An object's fields, one per row (nested values as compact JSON).
pub fn fields(v: &Value, keys: &[&str]) {
    let rows = keys.iter().filter_map(|k| {
        let field = v.get(*k)?;
        let text = match field {
            Value::Array(a) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            other => crate::client::str_of(other),
        };
        Some(vec![(*k).to_owned(), text])
    });
    table(&["FIELD", "VALUE"], rows);
}
