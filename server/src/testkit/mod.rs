//! Test support shipped with the server: the project's own mock upstream, used by the
//! integration tests, the end-to-end suite and the benchmark.

pub mod mock_anthropic;
pub mod mock_bedrock;
pub mod mock_gemini;
pub mod mock_oidc;
pub mod mock_upstream;
