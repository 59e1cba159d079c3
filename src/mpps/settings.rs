//! `[mpps]`: forwarding procedure steps to a RIS.

use serde::{Deserialize, Serialize};

/// `[mpps]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MppsSettings {
    /// `AE@host:port` of a RIS (MPPS SCP) every N-CREATE and N-SET is forwarded to, in the
    /// order received, after it is stored here.
    pub forward: Option<String>,
}

/// Where steps are forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardTarget {
    pub ae_title: String,
    /// `host:port`.
    pub addr: String,
}

impl MppsSettings {
    /// The parsed `forward`, if set.
    pub fn target(&self) -> Result<Option<ForwardTarget>, (&'static str, String)> {
        let Some(f) = self.forward.as_deref().filter(|f| !f.trim().is_empty()) else {
            return Ok(None);
        };
        let bad = || ("mpps.forward", format!("'{f}' is not AE@host:port"));
        let (ae, addr) = f.trim().split_once('@').ok_or_else(bad)?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let ae_ok = !ae.is_empty() && ae.len() <= 16 && ae.is_ascii() && !ae.contains('\\');
        if !ae_ok || host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad());
        }
        Ok(Some(ForwardTarget {
            ae_title: ae.to_string(),
            addr: addr.to_string(),
        }))
    }

    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.target().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_is_ae_at_host_port() {
        let s = |f: &str| MppsSettings {
            forward: Some(f.into()),
        };
        assert_eq!(
            s("RIS@ris.example:104").target().unwrap(),
            Some(ForwardTarget {
                ae_title: "RIS".into(),
                addr: "ris.example:104".into()
            })
        );
        for bad in [
            "RIS",
            "RIS@host",
            "@h:1",
            "RIS@h:0",
            "A_TITLE_LONGER_THAN_16@h:1",
        ] {
            assert_eq!(s(bad).validate().unwrap_err().0, "mpps.forward", "{bad}");
        }
        assert_eq!(MppsSettings::default().target().unwrap(), None);
    }
}
