//! Who may call the HTTP API: scopes, and the principal a request was authenticated as.

use std::fmt;

use serde::Serialize;

/// What a credential allows. `admin` implies the other two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Scope {
    /// Read studies, results, jobs, models and events.
    #[serde(rename = "results:read")]
    ResultsRead,
    /// Start work: reprocess a study, submit images.
    #[serde(rename = "inference:write")]
    InferenceWrite,
    /// Node administration.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::ResultsRead, Scope::InferenceWrite, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ResultsRead => "results:read",
            Scope::InferenceWrite => "inference:write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
