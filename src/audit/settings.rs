//! The config's top-level `"audit"` object.

use std::path::PathBuf;

use serde::Deserialize;

use super::AuditError;

/// How the audit log is written. Every field is optional; the defaults log
/// only the args digest, never rotate, never sign and do not mirror.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Resolved by the config module (relative to the config dir; default
    /// `entrypoint.log` beside the config; `UPM_LOG_FILE` wins).
    pub path: Option<PathBuf>,
    /// Log the call's args verbatim instead of only their digest.
    pub include_args: bool,
    pub rotate: Option<Rotation>,
    /// ed25519 secret key (PKCS#8 PEM, see [`super::keys`]).
    pub signing_key: Option<PathBuf>,
    /// Sign the chain head every this many entries (≥ 1).
    pub sign_every: u64,
    pub mirror: Option<Mirror>,
    /// Whether a log that holds only lines upm did not write (the log UPM wrote) is
    /// adopted: absent, only when `UPM_LOG_FILE` names it; `true`, whoever names it;
    /// `false`, never. See [`super`]'s "Adoption".
    pub adopt_foreign: Option<bool>,
    /// Set where the path is resolved, never read from the file: `UPM_LOG_FILE` named
    /// the log.
    #[serde(skip)]
    pub named_by_env: bool,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            path: None,
            include_args: false,
            rotate: None,
            signing_key: None,
            sign_every: 100,
            mirror: None,
            adopt_foreign: None,
            named_by_env: false,
        }
    }
}

impl AuditSettings {
    /// What allows adopting a foreign log (recorded in the `adopted` entry), if anything.
    pub fn adoption(&self) -> Option<&'static str> {
        match (self.adopt_foreign, self.named_by_env) {
            (Some(false), _) => None,
            (Some(true), _) => Some("audit.adopt_foreign"),
            (None, true) => Some("UPM_LOG_FILE"),
            (None, false) => None,
        }
    }

    /// Checks what serde cannot: values that would silently disable a feature.
    pub fn validate(&self) -> Result<(), AuditError> {
        if self.sign_every == 0 {
            return Err(AuditError::Settings(
                "audit.sign_every must be at least 1".into(),
            ));
        }
        if let Some(rotate) = &self.rotate {
            if rotate.max_bytes == Some(0) {
                return Err(AuditError::Settings(
                    "audit.rotate.max_bytes must be at least 1".into(),
                ));
            }
            if rotate.max_bytes.is_none() && !rotate.daily {
                return Err(AuditError::Settings(
                    "audit.rotate needs max_bytes and/or \"daily\": true".into(),
                ));
            }
        }
        Ok(())
    }
}

/// When to start a new file. Both may be set: whichever comes first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rotation {
    /// Rotate before an append would make the file larger than this.
    pub max_bytes: Option<u64>,
    /// Rotate when the file's first entry is from an earlier UTC day.
    pub daily: bool,
}

/// Where each durable entry is also emitted, for container log collectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mirror {
    Stderr,
    Syslog,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_gives_defaults() {
        let s: AuditSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(s, AuditSettings::default());
        assert_eq!(s.sign_every, 100);
        assert!(!s.include_args);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn full_object_parses() {
        let s: AuditSettings = serde_json::from_str(
            r#"{"path":"a.log","include_args":true,"rotate":{"max_bytes":10,"daily":true},
                "signing_key":"k.pem","sign_every":5,"mirror":"syslog","adopt_foreign":true}"#,
        )
        .unwrap();
        assert_eq!(s.mirror, Some(Mirror::Syslog));
        assert_eq!(s.rotate.as_ref().unwrap().max_bytes, Some(10));
        assert_eq!(s.sign_every, 5);
        assert_eq!(s.adopt_foreign, Some(true));
    }

    #[test]
    fn adoption_needs_upm_log_file_or_the_config() {
        let mut s = AuditSettings::default();
        assert_eq!(
            s.adoption(),
            None,
            "a log the config names is never adopted by default"
        );
        s.named_by_env = true;
        assert_eq!(s.adoption(), Some("UPM_LOG_FILE"));
        s.adopt_foreign = Some(false);
        assert_eq!(s.adoption(), None, "the config can refuse it");
        s.named_by_env = false;
        s.adopt_foreign = Some(true);
        assert_eq!(s.adoption(), Some("audit.adopt_foreign"));
        // Only the resolver sets it: the file cannot.
        assert!(serde_json::from_str::<AuditSettings>(r#"{"named_by_env":true}"#).is_err());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(serde_json::from_str::<AuditSettings>(r#"{"pth":"x"}"#).is_err());
        assert!(serde_json::from_str::<AuditSettings>(r#"{"rotate":{"size":1}}"#).is_err());
        assert!(serde_json::from_str::<AuditSettings>(r#"{"mirror":"file"}"#).is_err());
        let s: AuditSettings = serde_json::from_str(r#"{"sign_every":0}"#).unwrap();
        assert!(s.validate().is_err());
        let s: AuditSettings = serde_json::from_str(r#"{"rotate":{}}"#).unwrap();
        assert!(s.validate().is_err());
    }
}
