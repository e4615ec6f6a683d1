//! Configuration errors that name the file, the line and the field, found from the byte
//! span of the offending key or value in the TOML document.

use core::fmt;
use core::ops::Range;

use toml::de::{DeTable, DeValue};

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: String,
    line: Option<usize>,
    field: Option<String>,
    message: String,
}

impl ConfigError {
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The dotted path of the field, e.g. `neighbor[1].endpoint`.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn whole_file(file: &str, message: impl fmt::Display) -> Self {
        Self {
            file: file.to_owned(),
            line: None,
            field: None,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// An error found while checking a document, not yet placed in it.
#[derive(Debug)]
pub(crate) struct SpanError {
    pub span: Range<usize>,
    pub message: String,
}

impl SpanError {
    pub fn new(span: Range<usize>, message: impl fmt::Display) -> Self {
        Self {
            span,
            message: message.to_string(),
        }
    }
}

/// Places errors in one document.
pub(crate) struct Locator<'a> {
    pub file: &'a str,
    pub text: &'a str,
    pub table: &'a DeTable<'a>,
}

impl Locator<'_> {
    pub fn locate(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        let Some(span) = span else {
            return ConfigError::whole_file(self.file, message);
        };
        let at = span.start.min(self.text.len());
        let line = self.text.as_bytes()[..at]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        ConfigError {
            file: self.file.to_owned(),
            line: Some(line),
            field: path_in_table(self.table, at, ""),
            message,
        }
    }

    pub fn span_error(&self, e: SpanError) -> ConfigError {
        self.locate(Some(e.span), e.message)
    }

    pub fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        self.locate(e.span(), with_suggestion(e.message()))
    }
}

/// The deepest key or value containing byte `at`. Children are searched before the
/// table itself because the span of a `[header]` table covers only its header.
fn path_in_table(table: &DeTable<'_>, at: usize, prefix: &str) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let path = join(prefix, key.get_ref());
        if key.span().contains(&at) {
            return Some(path);
        }
        path_in_value(value.get_ref(), at, &path)
            .or_else(|| value.span().contains(&at).then_some(path))
    })
}

fn path_in_value(value: &DeValue<'_>, at: usize, path: &str) -> Option<String> {
    match value {
        DeValue::Table(t) => path_in_table(t, at, path),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let path = format!("{path}[{i}]");
            path_in_value(item.get_ref(), at, &path)
                .or_else(|| item.span().contains(&at).then_some(path))
        }),
        _ => None,
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Adds "did you mean" to serde's unknown-field message when a known field is a likely
/// misspelling (edit distance at most 2).
fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let mut quoted = rest.split('`').step_by(2);
    let Some(unknown) = quoted.next() else {
        return message.to_owned();
    };
    let best = quoted
        .map(|known| (edit_distance(unknown, known), known))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d);
    match best {
        Some((_, known)) => format!("{message} (did you mean `{known}`?)"),
        None => message.to_owned(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("endpiont", "endpoint"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            with_suggestion("unknown field `endpiont`, expected one of `name`, `endpoint`"),
            "unknown field `endpiont`, expected one of `name`, `endpoint` (did you mean `endpoint`?)"
        );
        let far = "unknown field `colour`, expected `name`";
        assert_eq!(with_suggestion(far), far);
    }
}
