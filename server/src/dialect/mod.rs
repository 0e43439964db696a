//! The API dialects the gateway speaks inbound (OpenAI's chat API and Anthropic's Messages
//! API), their request types, validation, and the translations
//! between them.

pub mod anthropic;
pub mod openai;
