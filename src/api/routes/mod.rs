pub mod audit;
pub mod events;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod studies;
