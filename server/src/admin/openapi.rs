//! The OpenAPI 3.1 description of the management API, served at
//! `/admin/v1/openapi.json`. Written by hand next to the handlers it describes; a test
//! checks that every management route is in it.

use serde_json::{Value, json};

fn error_ref() -> Value {
    json!({"description": "Error in OpenAI's shape", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn list(schema: &str) -> Value {
    json!({"description": "A list", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {"$ref": format!("#/components/schemas/{schema}")}}}
    }}}})
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

pub fn document() -> Value {
    let errors =
        json!({"400": error_ref(), "401": error_ref(), "403": error_ref(), "404": error_ref()});
    let with = |mut responses: Value| {
        if let (Some(r), Some(e)) = (responses.as_object_mut(), errors.as_object()) {
            for (k, v) in e {
                r.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        responses
    };
    let id_param =
        json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "AI Gateway management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Bearer master key or an admin's API token (virtual keys are refused). Money is USD as a JSON number; times are Unix seconds."
        },
        "servers": [{"url": "/admin/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/deployments": {"get": {"summary": "Model groups, deployments, live health and prices", "operationId": "listDeployments",
                "responses": with(json!({"200": list("ModelGroup")}))}},
            "/teams": {
                "get": {"summary": "List teams", "operationId": "listTeams", "responses": with(json!({"200": list("Team")}))},
                "post": {"summary": "Create a team", "operationId": "createTeam", "requestBody": body("NewTeam"),
                    "responses": with(json!({"201": ok("The team", "Team")}))}
            },
            "/users": {
                "get": {"summary": "List users", "operationId": "listUsers", "responses": with(json!({"200": list("User")}))},
                "post": {"summary": "Create a user", "operationId": "createUser", "requestBody": body("NewUser"),
                    "responses": with(json!({"201": ok("The user", "User")}))}
            },
            "/users/{id}/tokens": {"post": {"summary": "An API token for an admin user; the secret is in this answer only",
                "operationId": "createAdminToken", "parameters": id_param,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["name"],
                    "additionalProperties": false, "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 128}}}}}},
                "responses": with(json!({"201": {"description": "The token with its secret (`token`, `sk-gwa-…`)"}}))}},
            "/tokens/{id}": {"delete": {"summary": "Revoke an admin's API token", "operationId": "revokeAdminToken",
                "parameters": id_param, "responses": with(json!({"200": {"description": "Revoked"}}))}},
            "/teams/{id}/members": {
                "get": {"summary": "A team's members", "operationId": "listMembers", "parameters": id_param,
                    "responses": with(json!({"200": list("Member")}))},
                "post": {"summary": "Add a user to a team, or change their role there", "operationId": "setMember",
                    "parameters": id_param, "requestBody": body("NewMember"), "responses": with(json!({"200": ok("The membership", "Member")}))}
            },
            "/keys": {
                "get": {"summary": "List keys (never secrets)", "operationId": "listKeys",
                    "parameters": [{"name": "team_id", "in": "query", "schema": {"type": "string"}},
                        {"name": "user_id", "in": "query", "schema": {"type": "string"}},
                        {"name": "status", "in": "query", "schema": {"enum": ["requested", "approved", "active", "rejected", "revoked", "expired"]}}],
                    "responses": with(json!({"200": list("Key")}))},
                "post": {"summary": "Create a key; the secret is in this answer only", "operationId": "createKey", "requestBody": body("NewKey"),
                    "responses": with(json!({"201": ok("The key with its secret", "KeyWithSecret")}))}
            },
            "/keys/{id}": {
                "get": {"summary": "One key (never its secret)", "operationId": "getKey", "parameters": id_param,
                    "responses": with(json!({"200": ok("The key", "Key")}))},
                "patch": {"summary": "Set a key's models, tags, limits, budget or expiry (null clears a field)", "operationId": "updateKey",
                    "parameters": id_param, "requestBody": body("KeyPatch"), "responses": with(json!({"200": ok("The key", "Key"), "409": error_ref()}))},
                "delete": {"summary": "Revoke a key (requested, approved or active)", "operationId": "revokeKey", "parameters": id_param,
                    "responses": with(json!({"200": ok("The revoked key", "Key"), "409": error_ref()}))}
            },
            "/keys/{id}/approve": {"post": {"summary": "Approve a member's key request; the member reveals the secret once in the console",
                "operationId": "approveKey", "parameters": id_param,
                "responses": with(json!({"200": ok("The approved key", "Key"), "409": error_ref()}))}},
            "/keys/{id}/reject": {"post": {"summary": "Reject a key request with a reason", "operationId": "rejectKey", "parameters": id_param,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["reason"],
                    "additionalProperties": false, "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 500}}}}}},
                "responses": with(json!({"200": ok("The rejected key", "Key"), "409": error_ref()}))}},
            "/teams/{id}": {"patch": {"summary": "Set a team's model allow-list (empty: every configured model)", "operationId": "updateTeam",
                "parameters": id_param,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["models"],
                    "additionalProperties": false, "properties": {"models": {"type": "array", "items": {"type": "string"}}}}}}},
                "responses": with(json!({"200": ok("The team", "Team")}))}},
            "/teams/{id}/projects": {"get": {"summary": "A team's projects", "operationId": "listProjects", "parameters": id_param,
                "responses": with(json!({"200": {"description": "A list of {id, name, team_id}"}}))}},
            "/teams/{id}/members/{user_id}": {"delete": {"summary": "Remove a user from a team", "operationId": "removeMember",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "user_id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": with(json!({"200": {"description": "Removed"}}))}},
            "/users/{id}": {"patch": {"summary": "Change a user's organisation role", "operationId": "updateUser", "parameters": id_param,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["role"],
                    "additionalProperties": false, "properties": {"role": {"enum": ["admin", "finance", "auditor", "member"]}}}}}},
                "responses": with(json!({"200": ok("The user", "User")}))}},
            "/keys/{id}/rotate": {"post": {"summary": "New secret; the old one works for the grace period", "operationId": "rotateKey",
                "parameters": id_param,
                "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
                    "properties": {"grace_seconds": {"type": "integer", "minimum": 0, "maximum": 604800, "default": 3600}}}}}},
                "responses": with(json!({"200": ok("The key with its new secret", "KeyWithSecret")}))}},
            "/budgets": {
                "get": {"summary": "Every budget with this period's spending", "operationId": "listBudgets",
                    "responses": with(json!({"200": list("Budget")}))},
                "put": {"summary": "Set the budget of a key, project, team or user (hard limit per period, alert thresholds)",
                    "operationId": "putBudget", "requestBody": body("BudgetInput"),
                    "responses": with(json!({"200": ok("The budget", "Budget")}))}
            },
            "/budgets/{scope_type}/{scope_id}": {"delete": {"summary": "Remove a budget", "operationId": "deleteBudget",
                "parameters": [{"name": "scope_type", "in": "path", "required": true, "schema": {"enum": ["key", "project", "team", "user"]}},
                    {"name": "scope_id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": with(json!({"200": {"description": "Removed"}}))}},
            "/rate_limits": {
                "get": {"summary": "Every rate limit", "operationId": "listRateLimits", "responses": with(json!({"200": list("RateLimit")}))},
                "put": {"summary": "Set requests/tokens per minute and requests in flight of a key, project, team or user (all null removes them)",
                    "operationId": "putRateLimits", "requestBody": body("RateLimit"),
                    "responses": with(json!({"200": ok("The limits", "RateLimit")}))}
            },
            "/spend": {"get": {"summary": "Requests, tokens and cost from the ledger, grouped", "operationId": "spend",
                "parameters": [
                    {"name": "group_by", "in": "query", "schema": {"enum": ["team", "project", "key", "user", "model", "provider", "deployment"], "default": "team"}},
                    {"name": "from", "in": "query", "schema": {"type": "string"}, "description": "Unix seconds, YYYY-MM-DD or RFC 3339 (UTC); default the start of this month"},
                    {"name": "to", "in": "query", "schema": {"type": "string"}, "description": "exclusive; default now"}],
                "responses": with(json!({"200": {"description": "{object, group_by, from, to, data: [{group, name, requests, errors, prompt_tokens, completion_tokens, cached_tokens, cost_usd, cost_micros}], total}"}}))}},
            "/audit": {"get": {"summary": "The hash-chained audit log", "operationId": "listAudit",
                "responses": with(json!({"200": ok("Audit rows and whether the chain verifies", "AuditLog")}))}},
            "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1"}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}},
                "Team": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                    "models": {"type": "string", "description": "JSON array of allowed models; [] = all"}, "created_at": {"type": "integer"}}},
                "User": {"type": "object", "properties": {"id": {"type": "string"}, "username": {"type": "string"},
                    "email": {"type": ["string", "null"]}, "display_name": {"type": ["string", "null"]},
                    "role": {"enum": ["admin", "finance", "auditor", "member"]}, "created_at": {"type": "integer"}}},
                "NewUser": {"type": "object", "required": ["email"], "additionalProperties": false, "properties": {
                    "email": {"type": "string", "format": "email"}, "display_name": {"type": "string", "maxLength": 128},
                    "role": {"enum": ["admin", "finance", "auditor", "member"], "default": "member"}}},
                "Member": {"type": "object", "properties": {"team_id": {"type": "string"}, "user_id": {"type": "string"},
                    "role": {"enum": ["lead", "member"]}, "created_at": {"type": "integer"}}},
                "NewMember": {"type": "object", "required": ["user_id", "role"], "additionalProperties": false, "properties": {
                    "user_id": {"type": "string"}, "role": {"enum": ["lead", "member"]}}},
                "NewTeam": {"type": "object", "required": ["name"], "additionalProperties": false,
                    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 128}}},
                "NewKey": {"type": "object", "required": ["name", "team_id"], "additionalProperties": false, "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 128}, "team_id": {"type": "string"},
                    "project": {"type": "string", "maxLength": 128}, "models": {"type": "array", "items": {"type": "string"}},
                    "tags": {"type": "array", "maxItems": 16, "items": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}},
                    "budget_usd": {"type": "number", "minimum": 0}, "budget_period": {"enum": ["daily", "weekly", "monthly", "total"]},
                    "rpm_limit": {"type": "integer", "minimum": 1}, "tpm_limit": {"type": "integer", "minimum": 1},
                    "expires_at": {"type": "integer", "description": "Unix seconds"}}},
                "Key": {"type": "object", "properties": {
                    "id": {"type": "string"}, "object": {"const": "key"}, "name": {"type": "string"}, "prefix": {"type": "string"},
                    "team_id": {"type": "string"}, "project_id": {"type": ["string", "null"]}, "user_id": {"type": ["string", "null"]},
                    "status": {"enum": ["requested", "approved", "active", "rejected", "revoked", "expired"]},
                    "purpose": {"type": ["string", "null"]}, "decided_by": {"type": ["string", "null"]},
                    "decided_at": {"type": ["integer", "null"]}, "decision_reason": {"type": ["string", "null"]},
                    "models": {"type": "array", "items": {"type": "string"}}, "tags": {"type": "array", "items": {"type": "string"}},
                    "budget_usd": {"type": ["number", "null"]}, "budget_period": {"type": ["string", "null"]},
                    "rpm_limit": {"type": ["integer", "null"]}, "tpm_limit": {"type": ["integer", "null"]},
                    "expires_at": {"type": ["integer", "null"]}, "created_at": {"type": "integer"},
                    "previous_key_valid_until": {"type": ["integer", "null"]}}},
                "BudgetInput": {"type": "object", "required": ["scope_type", "scope_id", "amount_usd", "period"], "additionalProperties": false, "properties": {
                    "scope_type": {"enum": ["key", "project", "team", "user"]}, "scope_id": {"type": "string"},
                    "amount_usd": {"type": "number", "minimum": 0}, "period": {"enum": ["daily", "weekly", "monthly", "total"]},
                    "thresholds": {"type": "array", "maxItems": 10, "items": {"type": "integer", "minimum": 1, "maximum": 100}, "default": [50, 80, 100]}}},
                "Budget": {"type": "object", "properties": {
                    "id": {"type": "string"}, "object": {"const": "budget"}, "scope_type": {"type": "string"}, "scope_id": {"type": "string"},
                    "amount_usd": {"type": "number"}, "period": {"type": "string"}, "thresholds": {"type": "array", "items": {"type": "integer"}},
                    "period_start": {"type": "string"}, "resets_at": {"type": ["string", "null"]},
                    "spent_usd": {"type": "number"}, "reserved_usd": {"type": "number", "description": "held by instances as leases"}}},
                "RateLimit": {"type": "object", "required": ["scope_type", "scope_id"], "properties": {
                    "scope_type": {"enum": ["key", "project", "team", "user"]}, "scope_id": {"type": "string"},
                    "rpm": {"type": ["integer", "null"], "minimum": 1}, "tpm": {"type": ["integer", "null"], "minimum": 1},
                    "max_parallel": {"type": ["integer", "null"], "minimum": 1}}},
                "KeyPatch": {"type": "object", "additionalProperties": false, "properties": {
                    "models": {"type": "array", "items": {"type": "string"}},
                    "tags": {"type": "array", "maxItems": 16, "items": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}},
                    "rpm_limit": {"type": ["integer", "null"], "minimum": 1}, "tpm_limit": {"type": ["integer", "null"], "minimum": 1},
                    "budget_usd": {"type": ["number", "null"], "minimum": 0},
                    "budget_period": {"enum": ["daily", "weekly", "monthly", "total", null]},
                    "expires_at": {"type": ["integer", "null"], "description": "Unix seconds"}}},
                "KeyWithSecret": {"allOf": [{"$ref": "#/components/schemas/Key"},
                    {"type": "object", "required": ["key"], "properties": {"key": {"type": "string", "pattern": "^sk-gw-[0-9a-f]{64}$"}}}]},
                "ModelGroup": {"type": "object", "properties": {
                    "model": {"type": "string"}, "strategy": {"type": "string"}, "fallbacks": {"type": "array", "items": {"type": "string"}},
                    "deployments": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "string"}, "provider": {"type": "string"}, "upstream_model": {"type": "string"},
                        "weight": {"type": "integer"}, "status": {"enum": ["up", "cooling_down", "at_capacity"]},
                        "cooldown_remaining_ms": {"type": "integer"}, "in_flight": {"type": "integer"}, "latency_ms": {"type": "integer"},
                        "requests": {"type": "integer"}, "failures": {"type": "integer"}, "error_rate": {"type": "number"},
                        "input_per_mtok": {"type": ["number", "null"]}, "output_per_mtok": {"type": ["number", "null"]},
                        "cached_input_per_mtok": {"type": ["number", "null"]}}}}}},
                "AuditLog": {"type": "object", "properties": {"object": {"const": "list"}, "chain_intact": {"type": "boolean"},
                    "data": {"type": "array", "items": {"type": "object", "properties": {
                        "seq": {"type": "integer"}, "ts_ms": {"type": "integer"}, "actor": {"type": "string"}, "action": {"type": "string"},
                        "object_type": {"type": "string"}, "object_id": {"type": ["string", "null"]},
                        "before_json": {"type": ["string", "null"]}, "after_json": {"type": ["string", "null"]},
                        "source_ip": {"type": ["string", "null"]}, "prev_hash": {"type": "string"}, "hash": {"type": "string"}}}}}}
            }
        }
    })
}
