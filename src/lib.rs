//! ecs-image-operator: a Kubernetes operator that manages Alibaba Cloud ECS image tasks
//! (`ImageCopy`, `ImageImport`, `ImageExport`), with its own offline ECS emulator.
//!
//! - [`api`]: the CRD types (no logic).
//! - [`ecs`]: the ECS OpenAPI client (no Kubernetes imports).
//! - [`emulator`]: the ECS emulator used by tests and the demo (no controller imports).
//! - [`controller`]: one module per kind; decisions are pure functions, IO stays at the edges.

pub mod allocator;
pub mod api;
pub mod controller;
pub mod ecs;
pub mod emulator;
pub mod leader;
pub mod operator;
