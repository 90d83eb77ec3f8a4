//! Every end-to-end test of the repository, in one binary so that it links once:
//! the library with real components (`host`, `outbound`, `https`), the CLI
//! (`cli`), the service over HTTP (`service`), the platforms' webhooks
//! (`webhooks`), and the examples in every language (`languages`).

mod common;

mod api;
mod cli;
mod host;
mod https;
mod languages;
mod outbound;
mod page;
mod records;
mod replicas;
mod service;
mod webhooks;
