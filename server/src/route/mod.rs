//! Routing: deployments sharing a public model name form a group; a request for the name
//! goes to one deployment of the group, picked by weight. (Retries, fallbacks, cooldowns and
//! the other strategies build on this.)

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::Rng;

use crate::config::{Config, ProviderKind};
use crate::providers::Provider;

pub struct Deployment {
    pub id: String,
    pub model: String,
    pub upstream_model: String,
    pub kind: ProviderKind,
    pub provider: Provider,
    pub weight: u32,
}

pub struct ModelGroups {
    groups: BTreeMap<String, Vec<Arc<Deployment>>>,
}

impl ModelGroups {
    pub fn build(config: &Config, http: &reqwest::Client) -> ModelGroups {
        let mut groups: BTreeMap<String, Vec<Arc<Deployment>>> = BTreeMap::new();
        for d in &config.deployments {
            let dep = Deployment {
                id: d.id.clone().unwrap_or_else(|| d.model.clone()),
                model: d.model.clone(),
                upstream_model: d.upstream_model.clone().unwrap_or_else(|| d.model.clone()),
                kind: d.provider,
                provider: Provider::from_config(d, http, config.server.max_upstream_body_bytes),
                weight: d.weight,
            };
            groups
                .entry(d.model.clone())
                .or_default()
                .push(Arc::new(dep));
        }
        ModelGroups { groups }
    }

    /// One deployment of the group, with probability proportional to its weight.
    pub fn pick(&self, model: &str) -> Option<Arc<Deployment>> {
        let group = self.groups.get(model)?;
        if group.len() == 1 {
            return group.first().cloned();
        }
        let total: u64 = group.iter().map(|d| u64::from(d.weight)).sum();
        let mut ticket = rand::thread_rng().gen_range(0..total.max(1));
        for d in group {
            let w = u64::from(d.weight);
            if ticket < w {
                return Some(d.clone());
            }
            ticket -= w;
        }
        group.last().cloned()
    }

    pub fn groups(&self) -> impl Iterator<Item = (&String, &Vec<Arc<Deployment>>)> {
        self.groups.iter()
    }

    pub fn contains(&self, model: &str) -> bool {
        self.groups.contains_key(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_pick_follows_weights() {
        let text = "[server]\nmaster_key=\"0123456789abcdef0\"\n\
            [[deployments]]\nid=\"a\"\nmodel=\"m\"\nprovider=\"mock\"\nweight=1\n\
            [[deployments]]\nid=\"b\"\nmodel=\"m\"\nprovider=\"mock\"\nweight=3\n";
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        let cfg = Config::load(Some(&p), None, &crate::config::ProcessEnv).unwrap();
        let groups = ModelGroups::build(&cfg, &reqwest::Client::new());
        let mut b = 0;
        for _ in 0..4000 {
            if groups.pick("m").unwrap().id == "b" {
                b += 1;
            }
        }
        // Expect 3000; the bound is many standard deviations (≈27) wide.
        assert!((2800..3200).contains(&b), "b picked {b} times of 4000");
        assert!(groups.pick("nope").is_none());
    }
}
