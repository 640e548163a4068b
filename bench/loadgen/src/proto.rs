//! The WebSocket protocols a scenario can speak: Tether's canonical `/ws` and seed 002's
//! `/monorail/<channel>`. Both servers under test implement both, so the protocol is a
//! parameter of a scenario, not a property of a server.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// `/ws`: subscribe -> snapshot, then `PUT` pushes.
    Canonical,
    /// `/monorail/<channel>`: watch -> list, then `item` pushes.
    Monorail,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Canonical => "canonical",
            Protocol::Monorail => "monorail",
        }
    }

    /// The URL path to connect to for watching `resource`.
    pub fn path(self, resource: &str) -> String {
        match self {
            Protocol::Canonical => "/ws".to_owned(),
            Protocol::Monorail => format!("/monorail/{resource}"),
        }
    }

    /// The message that watches the whole resource, or one record of it.
    pub fn watch(self, resource: &str, id: Option<&str>) -> String {
        let id = id.map(|id| serde_json::Value::from(id).to_string());
        match (self, id) {
            (Protocol::Canonical, None) => {
                format!(r#"{{"type":"subscribe","req":1,"sub":"w","resource":"{resource}"}}"#)
            }
            (Protocol::Canonical, Some(id)) => format!(
                r#"{{"type":"subscribe","req":1,"sub":"w","resource":"{resource}","id":{id}}}"#
            ),
            (Protocol::Monorail, None) => r#"{"handler":"watch","params":{}}"#.to_owned(),
            (Protocol::Monorail, Some(id)) => {
                format!(r#"{{"handler":"watch","params":{{"id":{id}}}}}"#)
            }
        }
    }

    /// Whether `text` answers a watch: `Ok(true)` for the snapshot or list,
    /// `Ok(false)` for anything else (a welcome), `Err` for an error reply.
    pub fn watch_answer(self, text: &str) -> Result<bool, String> {
        let (ready, errors): (&str, &[&str]) = match self {
            Protocol::Canonical => (r#""type":"snapshot""#, &[r#""type":"error""#]),
            Protocol::Monorail => (
                r#""handler":"list""#,
                &[r#""handler":"failure""#, r#""handler":"error""#],
            ),
        };
        if errors.iter().any(|e| text.contains(e)) {
            return Err(format!("the server refused the watch: {text}"));
        }
        Ok(text.contains(ready))
    }
}

/// The first unsigned integer value of a `"key":` in `text`, at any depth. Scenario
/// writes use keys (`bseq`, `bt`) no protocol uses for anything else, so the first
/// match is the writer's, whatever envelope the server put around the data.
pub fn find_u64(text: &str, key: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find(key) {
        let start = from + at;
        let end = start + key.len();
        from = end;
        if start == 0 || bytes[start - 1] != b'"' || bytes.get(end) != Some(&b'"') {
            continue;
        }
        let mut i = end + 1;
        while bytes.get(i) == Some(&b' ') {
            i += 1;
        }
        if bytes.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while bytes.get(i) == Some(&b' ') {
            i += 1;
        }
        let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        return text[i..i + digits].parse().ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_numbers_in_either_envelope() {
        let canonical = r#"{"msg":7,"sub":"w","type":"PUT","pos":3,"resource":"r","id":"a","version":2,"data":{"bseq":41,"bt":123456}}"#;
        assert_eq!(find_u64(canonical, "bseq"), Some(41));
        assert_eq!(find_u64(canonical, "bt"), Some(123456));
        let monorail = r#"{"msg":3,"handler":"item","data":{"bseq":5,"bt":9,"id":"k1"}}"#;
        assert_eq!(find_u64(monorail, "bseq"), Some(5));
        assert_eq!(find_u64(r#"{"xbt":1, "bt" : 2}"#, "bt"), Some(2));
        assert_eq!(find_u64(r#"{"type":"welcome"}"#, "bseq"), None);
    }

    #[test]
    fn recognises_watch_answers() {
        let p = Protocol::Canonical;
        assert_eq!(p.watch_answer(r#"{"msg":1,"type":"welcome"}"#), Ok(false));
        assert_eq!(
            p.watch_answer(r#"{"msg":2,"type":"snapshot","records":[]}"#),
            Ok(true)
        );
        assert!(p.watch_answer(r#"{"msg":2,"type":"error"}"#).is_err());
        let m = Protocol::Monorail;
        assert_eq!(m.watch_answer(r#"{"handler":"list","items":[]}"#), Ok(true));
        assert!(m.watch_answer(r#"{"handler":"failure"}"#).is_err());
        assert!(Protocol::Canonical
            .watch("r", Some("a\"b"))
            .contains(r#""id":"a\"b""#));
    }
}
