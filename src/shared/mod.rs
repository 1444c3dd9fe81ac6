//! What every layer may use and nothing else: the bottom of the import
//! order (`pipeline` → `config`, `ports` → `shared`; see ARCHITECTURE.md).

pub mod cache;
pub mod entropy;
pub mod gcra;
pub mod headers;
pub mod hex;
pub mod identity;
pub mod path;
pub mod problem;
