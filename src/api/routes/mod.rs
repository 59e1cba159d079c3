pub mod audit;
pub mod health;
