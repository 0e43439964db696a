//! The shipped, date-stamped price catalog (`catalog.toml`, compiled in): list prices and
//! output-token limits of the providers' current models. The configuration's `[[prices]]`
//! override it per model.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

use super::Price;

const CATALOG: &str = include_str!("catalog.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    as_of: String,
    model: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    input: f64,
    output: f64,
    cached_input: Option<f64>,
    max_output_tokens: Option<i64>,
}

/// A catalog model: its price and output limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogModel {
    pub price: Price,
    pub max_output_tokens: Option<i64>,
}

pub struct Catalog {
    pub as_of: String,
    models: HashMap<String, CatalogModel>,
}

fn micros(usd: f64) -> i64 {
    (usd * 1_000_000.0).round() as i64
}

impl Catalog {
    fn parse(text: &str) -> Result<Catalog, toml::de::Error> {
        let file: File = toml::from_str(text)?;
        let models = file
            .model
            .into_iter()
            .map(|e| {
                let input = micros(e.input);
                (
                    e.name,
                    CatalogModel {
                        price: Price {
                            input,
                            output: micros(e.output),
                            cached_input: e.cached_input.map_or(input, micros),
                        },
                        max_output_tokens: e.max_output_tokens,
                    },
                )
            })
            .collect();
        Ok(Catalog {
            as_of: file.as_of,
            models,
        })
    }

    /// The catalog compiled into this binary.
    pub fn shipped() -> &'static Catalog {
        static SHIPPED: OnceLock<Catalog> = OnceLock::new();
        SHIPPED.get_or_init(|| {
            // A unit test parses the same text, so this cannot fail in a released binary.
            Catalog::parse(CATALOG).unwrap_or_else(|_| Catalog {
                as_of: String::new(),
                models: HashMap::new(),
            })
        })
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The entry for a model id as providers spell it: exactly, else without a Bedrock
    /// region prefix, version suffix, date stamp or `-latest`.
    pub fn get(&self, name: &str) -> Option<CatalogModel> {
        let mut candidate = name.trim().to_ascii_lowercase();
        if let Some(m) = self.models.get(&candidate) {
            return Some(*m);
        }
        for region in ["us.", "eu.", "apac.", "global.", "us-gov."] {
            if let Some(rest) = candidate.strip_prefix(region) {
                candidate = rest.to_owned();
                break;
            }
        }
        if let Some(m) = self.models.get(&candidate) {
            return Some(*m);
        }
        // "-v1:0" (Bedrock), then "-20250514" / "-2024-08-06" / "-latest".
        if let Some(i) = candidate.rfind("-v")
            && candidate[i + 2..]
                .split(':')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            candidate.truncate(i);
        }
        if let Some(m) = self.models.get(&candidate) {
            return Some(*m);
        }
        let stripped = strip_date(&candidate);
        self.models.get(stripped).copied()
    }
}

fn strip_date(s: &str) -> &str {
    if let Some(base) = s.strip_suffix("-latest") {
        return base;
    }
    let bytes = s.as_bytes();
    // -YYYYMMDD
    if bytes.len() > 9
        && bytes[bytes.len() - 9] == b'-'
        && bytes[bytes.len() - 8..].iter().all(u8::is_ascii_digit)
    {
        return &s[..s.len() - 9];
    }
    // -YYYY-MM-DD
    if bytes.len() > 11 {
        let tail = &s[s.len() - 11..];
        let t = tail.as_bytes();
        if t[0] == b'-'
            && t[5] == b'-'
            && t[8] == b'-'
            && [1, 2, 3, 4, 6, 7, 9, 10]
                .iter()
                .all(|&i| t[i].is_ascii_digit())
        {
            return &s[..s.len() - 11];
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_parses_and_covers_every_provider() {
        let c = Catalog::parse(CATALOG).expect("catalog.toml parses");
        assert!(
            c.as_of.len() == 10 && c.as_of.starts_with("20"),
            "{}",
            c.as_of
        );
        for name in [
            "gpt-4o-mini",
            "gpt-5",
            "claude-sonnet-4-5",
            "gemini-2.5-flash",
            "anthropic.claude-sonnet-4",
            "amazon.nova-lite-v1:0",
            "text-embedding-3-small",
        ] {
            assert!(c.get(name).is_some(), "{name}");
        }
        // Every chat model says how much it can write; prices are sane.
        for (name, m) in &c.models {
            assert!(m.price.input >= 0 && m.price.output >= 0, "{name}");
            assert!(m.price.cached_input <= m.price.input, "{name}");
            if m.price.output > 0 {
                assert!(m.max_output_tokens.is_some_and(|t| t > 0), "{name}");
            }
        }
        assert!(!Catalog::shipped().is_empty());
    }

    #[test]
    fn provider_spellings_find_their_base_entry() {
        let c = Catalog::shipped();
        let base = c.get("gpt-4o").unwrap();
        assert_eq!(c.get("gpt-4o-2024-08-06"), Some(base));
        assert_eq!(c.get("GPT-4o"), Some(base));
        let sonnet = c.get("claude-sonnet-4").unwrap();
        assert_eq!(c.get("claude-sonnet-4-20250514"), Some(sonnet));
        let bedrock = c.get("anthropic.claude-sonnet-4").unwrap();
        assert_eq!(
            c.get("us.anthropic.claude-sonnet-4-20250514-v1:0"),
            Some(bedrock)
        );
        assert_eq!(c.get("claude-3-5-haiku-latest"), c.get("claude-3-5-haiku"));
        assert_eq!(c.get("amazon.nova-pro-v1:0").unwrap().price.input, 800_000);
        assert!(c.get("gpt-4o-mini").unwrap() != base, "no prefix matching");
        assert!(c.get("my-own-model").is_none());
        assert_eq!(c.get("gpt-4o-mini").unwrap().price.cached_input, 75_000);
    }
}
