//! Typed reads of ConfigMap values (Go's `strconv`/`time` syntax).

use std::collections::BTreeMap;

use super::ConfigError;
use crate::duration;

/// Typed access to the ConfigMap's data, with upstream's parse errors.
pub(super) struct Reader<'a> {
    pub(super) data: &'a BTreeMap<String, String>,
}

impl Reader<'_> {
    pub(super) fn raw(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(|v| v.trim())
    }

    pub(super) fn parse_error(
        &self,
        key: &'static str,
        value: &str,
        reason: String,
    ) -> ConfigError {
        ConfigError::Parse {
            key,
            value: value.to_owned(),
            reason,
        }
    }

    pub(super) fn float(&self, key: &'static str, default: f64) -> Result<f64, ConfigError> {
        let Some(v) = self.raw(key) else {
            return Ok(default);
        };
        match v.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(f),
            Ok(_) => Err(self.parse_error(key, v, format!("{v:?} is not a finite number"))),
            Err(_) => Err(self.parse_error(key, v, format!("{v:?} is not a valid number"))),
        }
    }

    pub(super) fn int32(&self, key: &'static str, default: i32) -> Result<i32, ConfigError> {
        let Some(v) = self.raw(key) else {
            return Ok(default);
        };
        v.parse::<i32>()
            .map_err(|_| self.parse_error(key, v, format!("{v:?} is not a valid 32-bit integer")))
    }

    pub(super) fn boolean(&self, key: &'static str, default: bool) -> Result<bool, ConfigError> {
        let Some(v) = self.raw(key) else {
            return Ok(default);
        };
        // Go's strconv.ParseBool.
        match v {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            _ => Err(self.parse_error(key, v, format!("{v:?} is not a valid bool"))),
        }
    }

    pub(super) fn duration(&self, key: &'static str, default: i64) -> Result<i64, ConfigError> {
        let Some(v) = self.raw(key) else {
            return Ok(default);
        };
        duration::parse(v).map_err(|e| self.parse_error(key, v, format!("time: {e} {v:?}")))
    }
}
