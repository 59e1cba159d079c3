//! `[hl7]`: the inbound MLLP listener for orders.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `[hl7]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Hl7Settings {
    /// Address the MLLP listener for ORM^O01 / OMI^O23 orders binds, e.g. `0.0.0.0:2575`;
    /// unset: no listener.
    pub listen: Option<SocketAddr>,
}
