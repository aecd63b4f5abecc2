//! Reading a [`SessionConfig`] from JSON, the shape the TypeScript contract defines
//! (camelCase fields). Every failure names the field by its path from `config`, e.g.
//! `config.charter.objectives must be an array of strings`.
//!
//! Two JavaScript values have no JSON form, so they arrive encoded: a `RegExp` as
//! `{"source": "...", "flags": "..."}` (a plain string is a source without flags) and a
//! `Date` as milliseconds since the epoch (an RFC 3339 string is accepted too).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::*;

/// A config field that is missing or has the wrong type or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// Path of the field, e.g. `config.charter.objectives`.
    pub field: String,
    /// The whole sentence, starting with the field's path.
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, what: impl std::fmt::Display) -> Self {
        let field = field.into();
        let message = format!("{field} {what}");
        Self { field, message }
    }
}

type Result<T> = std::result::Result<T, ConfigError>;

/// One object being read, with the path that names it in errors.
pub(crate) struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub(crate) fn of(value: &'a Value, path: &str) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Self {
                path: path.to_owned(),
                map,
            }),
            _ => Err(ConfigError::new(path, "must be an object")),
        }
    }

    pub(crate) fn path_of(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &'a String> {
        self.map.keys()
    }

    /// The value of `key`, treating `null` like an absent field (JSON has no `undefined`).
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn object(&self, key: &str) -> Result<Fields<'a>> {
        match self.get(key) {
            Some(v) => Fields::of(v, &self.path_of(key)),
            None => Err(ConfigError::new(self.path_of(key), "is required (an object)")),
        }
    }

    pub(crate) fn string(&self, key: &str) -> Result<String> {
        self.opt_string(key)?
            .ok_or_else(|| ConfigError::new(self.path_of(key), "is required (a string)"))
    }

    pub(crate) fn opt_string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ConfigError::new(self.path_of(key), "must be a string")),
        }
    }

    pub(crate) fn strings(&self, key: &str) -> Result<Vec<String>> {
        self.opt_strings(key)?.ok_or_else(|| {
            ConfigError::new(self.path_of(key), "is required (an array of strings)")
        })
    }

    pub(crate) fn opt_strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let bad = || ConfigError::new(self.path_of(key), "must be an array of strings");
        let Value::Array(items) = value else {
            return Err(bad());
        };
        items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(bad))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ConfigError::new(self.path_of(key), "must be a boolean")),
        }
    }

    /// A whole, non-negative number (counts, milliseconds, bytes).
    pub(crate) fn opt_count(&self, key: &str) -> Result<Option<u64>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let bad = || ConfigError::new(self.path_of(key), "must be a non-negative integer");
        if let Some(n) = value.as_u64() {
            return Ok(Some(n));
        }
        match value.as_f64() {
            Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(Some(f as u64)),
            _ => Err(bad()),
        }
    }

    pub(crate) fn count(&self, key: &str) -> Result<u64> {
        self.opt_count(key)?.ok_or_else(|| {
            ConfigError::new(self.path_of(key), "is required (a non-negative integer)")
        })
    }

    pub(crate) fn opt_map(&self, key: &str) -> Result<Option<Map<String, Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(_) => Err(ConfigError::new(self.path_of(key), "must be an object")),
        }
    }

    pub(crate) fn map(&self, key: &str) -> Result<Map<String, Value>> {
        self.opt_map(key)?
            .ok_or_else(|| ConfigError::new(self.path_of(key), "is required (an object)"))
    }

    /// Each element of an array field, with its indexed path.
    pub(crate) fn items(&self, key: &str, what: &str) -> Result<Vec<(String, &'a Value)>> {
        match self.get(key) {
            None => Err(ConfigError::new(self.path_of(key), format!("is required ({what})"))),
            Some(Value::Array(items)) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{}[{i}]", self.path_of(key)), v))
                .collect()),
            Some(_) => Err(ConfigError::new(self.path_of(key), format!("must be {what}"))),
        }
    }
}

impl SessionConfig {
    /// Reads and checks a config in the contract's JSON shape. `config` is the name
    /// used in error messages.
    pub fn from_json(value: &Value) -> Result<Self> {
        let config = Fields::of(value, "config")?;
        let working_directory = config.string("workingDirectory")?;
        if working_directory.is_empty() {
            return Err(ConfigError::new(
                "config.workingDirectory",
                "must not be empty",
            ));
        }
        let timeout_ms = config.opt_count("timeout")?.filter(|&t| t > 0);
        Ok(SessionConfig {
            working_directory: PathBuf::from(working_directory),
            charter: charter(&config.object("charter")?)?,
            task_context: task_context(&config.object("taskContext")?)?,
            memory: memory(&config.object("memory")?)?,
            environment_variables: environment(&config)?,
            timeout_ms,
            verbose: config.opt_bool("verbose")?.unwrap_or(false),
            claude_config_path: config.opt_string("claudeConfigPath")?.map(PathBuf::from),
            keep_alive: config.opt_bool("keepAlive")?.unwrap_or(false),
            resume_session_id: resume_id(&config)?,
            max_budget_usd: budget(&config)?,
            prompt: config.opt_string("prompt")?,
        })
    }
}

fn charter(c: &Fields) -> Result<Charter> {
    let identity = c.object("identity")?;
    let constraints = c.object("constraints")?;
    let resources = c.object("resources")?;
    Ok(Charter {
        identity: Identity {
            name: identity.string("name")?,
            email: identity.string("email")?,
            role: identity.string("role")?,
        },
        objectives: c.strings("objectives")?,
        constraints: Constraints {
            forbidden_commands: constraints.strings("forbiddenCommands")?,
            forbidden_patterns: patterns(&constraints)?,
            required_approvals: constraints.strings("requiredApprovals")?,
        },
        resources: Resources {
            max_tokens: resources.count("maxTokens")?,
            max_execution_time_ms: resources.count("maxExecutionTime")?,
            allowed_tools: resources.strings("allowedTools")?,
        },
    })
}

fn patterns(constraints: &Fields) -> Result<Vec<ForbiddenPattern>> {
    let what = "an array of RegExp objects or strings";
    constraints
        .items("forbiddenPatterns", what)?
        .into_iter()
        .map(|(path, item)| {
            let (source, flags) = match item {
                Value::String(s) => (s.as_str(), ""),
                Value::Object(o) => match (o.get("source"), o.get("flags")) {
                    (Some(Value::String(s)), None | Some(Value::Null)) => (s.as_str(), ""),
                    (Some(Value::String(s)), Some(Value::String(f))) => (s.as_str(), f.as_str()),
                    _ => return Err(ConfigError::new(path, "must be a RegExp or a string")),
                },
                _ => return Err(ConfigError::new(path, "must be a RegExp or a string")),
            };
            ForbiddenPattern::new(source, flags).map_err(|e| {
                ConfigError::new(path, format!("({e}) is not a pattern this engine supports"))
            })
        })
        .collect()
}

fn task_context(t: &Fields) -> Result<TaskContext> {
    let priority = t.string("priority")?;
    let priority = priority.parse().map_err(|_| {
        ConfigError::new(
            t.path_of("priority"),
            "must be one of 'critical', 'high', 'medium', 'low'",
        )
    })?;
    Ok(TaskContext {
        task_id: t.string("taskId")?,
        description: t.string("description")?,
        priority,
        related_tasks: t.opt_strings("relatedTasks")?.unwrap_or_default(),
        metadata: t.opt_map("metadata")?.unwrap_or_default(),
    })
}

fn memory(m: &Fields) -> Result<MemoryContext> {
    let recent_actions = m
        .items("recentActions", "an array")?
        .into_iter()
        .map(|(path, item)| {
            let a = Fields::of(item, &path)?;
            Ok(RecentAction {
                timestamp: timestamp(&a, "timestamp")?,
                action: a.string("action")?,
                result: a.string("result")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let conversation_history = m
        .items("conversationHistory", "an array")?
        .into_iter()
        .map(|(path, item)| {
            let c = Fields::of(item, &path)?;
            let role = match c.string("role")?.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                _ => {
                    return Err(ConfigError::new(
                        c.path_of("role"),
                        "must be 'user' or 'assistant'",
                    ))
                }
            };
            Ok(ConversationMessage {
                role,
                content: c.string("content")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(MemoryContext {
        recent_actions,
        conversation_history,
        preferences: m.map("preferences")?,
        project_context: m.map("projectContext")?,
    })
}

fn timestamp(f: &Fields, key: &str) -> Result<SystemTime> {
    let bad = || ConfigError::new(f.path_of(key), "must be a valid Date");
    match f.get(key) {
        None => Err(ConfigError::new(f.path_of(key), "is required (a Date)")),
        Some(Value::Number(n)) => {
            let ms = n.as_f64().filter(|ms| ms.is_finite()).ok_or_else(bad)?;
            let offset = Duration::from_millis(ms.abs() as u64);
            if ms >= 0.0 {
                UNIX_EPOCH.checked_add(offset)
            } else {
                UNIX_EPOCH.checked_sub(offset)
            }
            .ok_or_else(bad)
        }
        Some(Value::String(s)) => humantime::parse_rfc3339_weak(s).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

fn budget(config: &Fields) -> Result<Option<f64>> {
    match config.get("maxBudgetUsd") {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(usd) if usd > 0.0 && usd.is_finite() => Ok(Some(usd)),
            _ => Err(ConfigError::new("config.maxBudgetUsd", "must be a positive number (US dollars)")),
        },
    }
}

/// A conversation id to resume: Claude Code makes a file name of it, so only the
/// UUID form is accepted.
fn resume_id(config: &Fields) -> Result<Option<String>> {
    let Some(id) = config.opt_string("resumeSessionId")? else {
        return Ok(None);
    };
    match uuid::Uuid::try_parse(&id) {
        Ok(u) if u.hyphenated().to_string() == id.to_ascii_lowercase() => Ok(Some(id)),
        _ => Err(ConfigError::new("config.resumeSessionId", "must be a UUID (a claudeSessionId)")),
    }
}

fn environment(config: &Fields) -> Result<BTreeMap<String, String>> {
    let Some(vars) = config.opt_map("environmentVariables")? else {
        return Ok(BTreeMap::new());
    };
    let path = config.path_of("environmentVariables");
    vars.into_iter()
        .map(|(name, value)| {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(ConfigError::new(
                    format!("{path}[{name:?}]"),
                    "is not a valid environment variable name",
                ));
            }
            match value {
                Value::String(v) if !v.contains('\0') => Ok((name, v)),
                _ => Err(ConfigError::new(
                    format!("{path}.{name}"),
                    "must be a string without NUL characters",
                )),
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
