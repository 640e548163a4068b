//! The auth file (`--auth-config FILE`): token keys and access rules, in TOML.
//!
//! ```toml
//! anonymous = false                  # requests without a token: refused (401)
//!
//! [jwt]
//! secret_file = "jwt-secret"         # HS256; or `secret = "..."`
//! public_key = "jwt-public.pem"      # RS256; paths are relative to this file
//! issuer = "https://id.example.com"  # optional: required `iss`
//! audience = "tether"                # optional: required `aud`
//! leeway_seconds = 30
//!
//! [resources.todos]                  # a name, a `prefix*`, or "*"
//! read = "data.owner == token.sub"
//! write = "data.owner == token.sub"
//!
//! [topics."workflow/*"]
//! subscribe = "token.role == 'ops'"
//! publish = "token.role == 'service'"
//!
//! [rooms]                            # rooms that are not a record's `<resource>/<id>`
//! join = "token.sub != null"
//! ```
//!
//! Unknown keys are errors, so a misspelt `reed = ...` cannot silently deny (or, worse,
//! be thought to allow) something. docs/security.md describes the rule language.

use super::jwt::Keys;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tether_engine::access::RuleSet;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    #[serde(default)]
    pub anonymous: bool,
    #[serde(default)]
    pub jwt: JwtSection,
    #[serde(default)]
    pub resources: BTreeMap<String, ResourceSection>,
    #[serde(default)]
    pub topics: BTreeMap<String, TopicSection>,
    #[serde(default)]
    pub rooms: RoomSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub public_key: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSection {
    pub read: Option<String>,
    pub write: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSection {
    pub subscribe: Option<String>,
    pub publish: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSection {
    pub join: Option<String>,
}

impl AuthFile {
    /// Reads and parses the file; errors name the file.
    pub fn load(path: &Path) -> Result<(AuthFile, Keys), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: AuthFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let keys = file
            .keys(base)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((file, keys))
    }

    fn keys(&self, base: &Path) -> Result<Keys, String> {
        let read = |p: &Path| {
            let p = base.join(p);
            std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let secret = match (&self.jwt.secret, &self.jwt.secret_file) {
            (Some(_), Some(_)) => return Err("[jwt] has both secret and secret_file".into()),
            (Some(s), None) => Some(s.clone()),
            (None, Some(f)) => Some(
                String::from_utf8(read(f)?)
                    .map_err(|_| "the secret file is not UTF-8".to_owned())?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        Ok(Keys {
            secret,
            public_key_pem: self.jwt.public_key.as_deref().map(read).transpose()?,
            issuer: self.jwt.issuer.clone(),
            audience: self.jwt.audience.clone(),
            leeway_seconds: self.jwt.leeway_seconds,
        })
    }

    pub fn rules(&self) -> RuleSet {
        RuleSet {
            resources: self
                .resources
                .iter()
                .map(|(k, r)| (k.clone(), r.read.clone(), r.write.clone()))
                .collect(),
            topics: self
                .topics
                .iter()
                .map(|(k, t)| (k.clone(), t.subscribe.clone(), t.publish.clone()))
                .collect(),
            rooms: self.rooms.join.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_section_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("secret"),
            "s3cr3t-of-at-least-thirty-two-bytes\n",
        )
        .unwrap();
        let path = dir.path().join("auth.toml");
        std::fs::write(
            &path,
            r#"
anonymous = true
[jwt]
secret_file = "secret"
issuer = "me"
[resources.todos]
read = "data.owner == token.sub"
[resources."*"]
write = "false"
[topics."logs/*"]
subscribe = "true"
[rooms]
join = "true"
"#,
        )
        .unwrap();
        let (file, keys) = AuthFile::load(&path).unwrap();
        assert!(file.anonymous);
        assert_eq!(
            keys.secret.as_deref(),
            Some("s3cr3t-of-at-least-thirty-two-bytes")
        );
        assert_eq!(keys.issuer.as_deref(), Some("me"));
        let rules = file.rules();
        assert_eq!(rules.resources.len(), 2);
        assert_eq!(rules.topics.len(), 1);
        assert!(tether_engine::Access::with_rules(rules).is_ok());

        std::fs::write(&path, "[resources.todos]\nreed = \"true\"\n").unwrap();
        let e = AuthFile::load(&path).unwrap_err();
        assert!(e.contains("reed"), "{e}");
        assert!(AuthFile::load(&dir.path().join("missing.toml")).is_err());
    }
}
