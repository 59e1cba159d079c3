pub mod audit;
pub mod events;
pub mod health;
pub mod jobs;
pub mod me;
pub mod metrics;
pub mod models;
pub mod studies;
