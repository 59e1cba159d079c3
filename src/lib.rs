//! radstream: an AI node beside the PACS.
//!
//! Data flow, one module per step:
//! receive ([`ingest`]) → store ([`store`]) → study complete ([`study`]) → job ([`job`]) →
//! inference ([`inference`]); every state change is logged in [`events`]. [`api`] serves
//! HTTP, [`scu`] sends DICOM, [`retention`] removes instances a study no longer needs,
//! [`startup`] wires it all together.

pub mod api;
pub mod auth;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod commitment;
pub mod compat;
pub mod configuration;
pub mod dataset;
pub mod db;
pub mod dicomweb;
pub mod domain;
pub mod events;
pub mod export;
pub mod fhir;
pub mod file_modes;
pub mod hl7;
pub mod imaging;
pub mod inference;
pub mod ingest;
pub mod job;
pub mod measurement;
pub mod metrics;
pub mod mpps;
pub mod pipeline;
pub mod report;
pub mod result;
pub mod retention;
pub mod scu;
pub mod startup;
pub mod store;
pub mod study;
pub mod supervisor;
pub mod telemetry;
pub mod timeline;
pub mod tls;
pub mod ui;
pub mod xml;

/// Implementation Class UID written in every file meta and association we make.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.38873186743228840502222543848523493133";
/// Implementation Version Name (at most 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("RADSTREAM_", env!("CARGO_PKG_VERSION"));
