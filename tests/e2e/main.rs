//! End-to-end tests: one binary (link time), one module per feature.

mod auth;
mod cli;
mod crash;
mod export;
mod helpers;
mod inference;
mod ingest;
mod metrics;
mod openapi;
mod pipeline;
