//! End-to-end tests: one binary (link time), one module per feature.

mod auth;
mod cli;
mod crash;
mod dicomweb;
mod edge;
mod events;
mod export;
mod export_http;
mod fhir;
mod helpers;
mod inference;
mod ingest;
mod integrity;
mod landmarks;
mod leapai;
mod metrics;
mod neolens;
mod openapi;
mod pi;
mod pipeline;
mod privacy;
mod radanalyzer;
mod radanalyzer_capture;
mod real_images;
mod retention;
mod voxray;
