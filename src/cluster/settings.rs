//! `[node]`: who this node is among several sharing one database, and what it runs.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a node runs. A cluster scales each separately: DICOM listeners, GPU workers, the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The DICOM listener (C-STORE, C-ECHO, plain and TLS) and study completion.
    Ingest,
    /// The pipeline (inference), the report and export workers, and retention.
    Worker,
    /// The HTTP API: REST, SSE, DICOMweb (STOW-RS too), FHIR, vendor APIs, docs.
    Api,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Ingest, Role::Worker, Role::Api];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Worker => "worker",
            Role::Api => "api",
        }
    }
}

/// A set of roles, written `all` or as a comma list (`ingest,api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles([bool; 3]);

impl Roles {
    pub fn all() -> Roles {
        Roles([true; 3])
    }

    pub fn has(&self, role: Role) -> bool {
        self.0[role as usize]
    }

    /// The roles in a fixed order.
    pub fn list(&self) -> Vec<&'static str> {
        Role::ALL
            .into_iter()
            .filter(|r| self.has(*r))
            .map(Role::as_str)
            .collect()
    }

    /// Parses `all` or a comma list of `ingest`, `worker`, `api`; the error names the word.
    pub fn parse(s: &str) -> Result<Roles, String> {
        let mut set = [false; 3];
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word.eq_ignore_ascii_case("all") {
                return Ok(Roles::all());
            }
            let role = Role::ALL
                .into_iter()
                .find(|r| r.as_str().eq_ignore_ascii_case(word))
                .ok_or_else(|| {
                    format!("unknown role `{word}` (expected all, ingest, worker or api)")
                })?;
            set[role as usize] = true;
        }
        if set == [false; 3] {
            return Err("no role given (expected all, ingest, worker or api)".into());
        }
        Ok(Roles(set))
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Roles::all() {
            return f.write_str("all");
        }
        f.write_str(&self.list().join(","))
    }
}

impl Serialize for Roles {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Roles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Roles, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        let text = match Form::deserialize(d)? {
            Form::One(s) => s,
            Form::Many(v) => v.join(","),
        };
        Roles::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `[node]`
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSettings {
    /// The node's name among the nodes sharing the database (shown in `/health`, `/metrics`,
    /// job workers and events). Empty: the host name (a Kubernetes pod's name).
    pub id: String,
    /// What this node runs (see [`Role`]); `serve --role` overrides it.
    #[schemars(with = "String")]
    pub roles: Roles,
    /// Seconds between the node's heartbeats in the shared database.
    pub heartbeat_secs: u64,
    /// A node whose last heartbeat is older than this many seconds is dead: its open
    /// associations no longer hold studies back, and its row is removed.
    pub expire_secs: u64,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            id: String::new(),
            roles: Roles::all(),
            heartbeat_secs: 5,
            expire_secs: 20,
        }
    }
}

impl NodeSettings {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.heartbeat_secs == 0 {
            return Err(("node.heartbeat_secs", "must be at least 1".into()));
        }
        if self.expire_secs < 2 * self.heartbeat_secs {
            return Err((
                "node.expire_secs",
                "must be at least twice node.heartbeat_secs".into(),
            ));
        }
        if self.id.len() > 128 || self.id.chars().any(|c| c.is_control()) {
            return Err((
                "node.id",
                "must be at most 128 characters, none of them control characters".into(),
            ));
        }
        Ok(())
    }

    /// The configured id, or the host name, or `radstream` when neither is known.
    pub fn resolved_id(&self) -> String {
        if !self.id.trim().is_empty() {
            return self.id.trim().to_string();
        }
        host_name().unwrap_or_else(|| "radstream".to_string())
    }
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_all_and_lists() {
        assert_eq!(Roles::parse("all").unwrap(), Roles::all());
        let r = Roles::parse("ingest, API").unwrap();
        assert!(r.has(Role::Ingest) && r.has(Role::Api) && !r.has(Role::Worker));
        assert_eq!(r.to_string(), "ingest,api");
        assert_eq!(
            Roles::parse("ingest,worker,api").unwrap().to_string(),
            "all"
        );
        assert!(Roles::parse("gpu").unwrap_err().contains("`gpu`"));
        assert!(Roles::parse(" , ").is_err());
    }

    #[test]
    fn roles_deserialize_from_a_string_or_a_list() {
        #[derive(Deserialize)]
        struct S {
            roles: Roles,
        }
        let s: S = toml::from_str("roles = \"worker\"").unwrap();
        assert_eq!(s.roles.list(), vec!["worker"]);
        let s: S = toml::from_str("roles = [\"api\", \"ingest\"]").unwrap();
        assert_eq!(s.roles.list(), vec!["ingest", "api"]);
        assert!(toml::from_str::<S>("roles = \"gpu\"").is_err());
    }

    #[test]
    fn the_id_defaults_to_the_host_name() {
        let s = NodeSettings::default();
        assert!(!s.resolved_id().is_empty());
        let s = NodeSettings {
            id: " node-a ".into(),
            ..NodeSettings::default()
        };
        assert_eq!(s.resolved_id(), "node-a");
    }
}
