//! Client for the Alibaba Cloud ECS OpenAPI, version 2014-05-26.

pub mod sign;
