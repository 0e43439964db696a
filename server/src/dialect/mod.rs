//! The API dialects the gateway speaks inbound (OpenAI today; Anthropic's Messages API
//! joins with the provider work), their request types, validation, and the translations
//! between them.

pub mod openai;
