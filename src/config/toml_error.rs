//! The TOML layer's own errors (serde's "unknown field", "unknown variant") worded as
//! certkeeper's validator words its errors: the key with its section, what it may be, and one
//! "did you mean" when a known name is close.

use std::ops::Range;

/// `message` from the TOML parser about `span` of `text`, reworded where its shape is known.
pub(super) fn reword(message: &str, text: &str, span: &Range<usize>) -> String {
    let section = section_at(text, span.start);
    let qualified = |key: &str| match &section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_string(),
    };
    if let Some((field, expected)) = parse_unknown(message, "unknown field") {
        let table = section
            .as_deref()
            .map_or("the top level".to_string(), |s| format!("[{s}]"));
        let guess =
            closest(&field, &expected).map_or(String::new(), |k| format!(" (did you mean `{k}`?)"));
        return format!(
            "{}: unknown key{guess}; the keys of {table} are {}",
            qualified(&field),
            expected.join(", ")
        );
    }
    if let Some((value, expected)) = parse_unknown(message, "unknown variant") {
        let key = key_on_line(text, span.start).unwrap_or_default();
        return format!(
            "{}: \"{value}\" is not one of {}{}",
            qualified(&key),
            expected
                .iter()
                .map(|e| format!("\"{e}\""))
                .collect::<Vec<_>>()
                .join(", "),
            closest(&value, &expected)
                .map_or(String::new(), |k| format!("; did you mean \"{k}\"?"))
        );
    }
    match (&section, key_on_line(text, span.start)) {
        (_, Some(key)) if !key.is_empty() => format!("{}: {message}", qualified(&key)),
        (Some(section), _) => format!("[{section}]: {message}"),
        _ => message.to_string(),
    }
}

/// `unknown field \`X\`, expected one of \`a\`, \`b\`` as (X, [a, b]).
fn parse_unknown(message: &str, kind: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix(kind)?.trim_start();
    let mut quoted = rest.split('`').skip(1).step_by(2).map(str::to_string);
    let name = quoted.next()?;
    Some((name, quoted.collect()))
}

/// The closest of `known` to `given`, when close enough to be a typo (or `given` merely adds
/// to it: `listen_address` for `listen`).
fn closest<'a>(given: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| {
            let extended = k.len() >= 4 && given.starts_with(k.as_str());
            let distance = strsim::damerau_levenshtein(given, k);
            (if extended { 0 } else { distance }, k)
        })
        .filter(|(distance, k)| *distance <= (k.len() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k.as_str())
}

/// The table header (`[daemon]`, `[[certificate]]`, `[certificate.output]`) in force at `at`.
fn section_at(text: &str, at: usize) -> Option<String> {
    let before = text.get(..at).unwrap_or(text);
    before.lines().rev().find_map(|line| {
        let line = line.trim();
        let inner = line
            .strip_prefix("[[")
            .and_then(|l| l.split("]]").next())
            .or_else(|| line.strip_prefix('[').and_then(|l| l.split(']').next()))?;
        Some(inner.trim().to_string())
    })
}

/// The key assigned on the line that holds `at` (`key = value`).
fn key_on_line(text: &str, at: usize) -> Option<String> {
    let start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    Some(key.trim().trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reworded(text: &str, message: &str, at: &str) -> String {
        let start = text.find(at).unwrap();
        reword(message, text, &(start..start + at.len()))
    }

    #[test]
    fn unknown_keys_and_values_name_section_key_and_a_near_miss() {
        let text = "[daemon]\nlisten_adress = \"x\"\n\n[[certificate]]\nkey_type = \"rsa1024\"\n";
        let said = reworded(
            text,
            "unknown field `listen_adress`, expected one of `state_dir`, `listen`, `listen_address_x`",
            "listen_adress",
        );
        assert!(
            said.starts_with("daemon.listen_adress: unknown key (did you mean `listen`?)"),
            "{said}"
        );
        assert!(said.contains("the keys of [daemon] are"), "{said}");
        let said = reworded(
            text,
            "unknown variant `rsa1024`, expected one of `ecdsa-p256`, `rsa-2048`, `rsa-4096`",
            "\"rsa1024\"",
        );
        assert_eq!(
            said,
            "certificate.key_type: \"rsa1024\" is not one of \"ecdsa-p256\", \"rsa-2048\", \
             \"rsa-4096\""
        );
        let said = reworded(
            "[[certificate]]\nkey_type = \"ecdsa-p265\"\n",
            "unknown variant `ecdsa-p265`, expected one of `ecdsa-p256`, `rsa-2048`",
            "\"ecdsa-p265\"",
        );
        assert!(said.ends_with("did you mean \"ecdsa-p256\"?"), "{said}");
        let said = reworded(
            "[[certificate]]\nchalenge = 1\n",
            "unknown field `chalenge`, expected one of `name`, `challenge`",
            "chalenge",
        );
        assert!(said.contains("(did you mean `challenge`?)"), "{said}");
        // Nothing close: no guess.
        let said = reworded(
            "[[certificate]]\nxyz = 1\n",
            "unknown field `xyz`, expected one of `name`, `challenge`",
            "xyz",
        );
        assert!(!said.contains("did you mean"), "{said}");
    }
}
