//! Everything the tracer needs to know about one Go runtime's data layout: struct
//! offsets, the constants it reads (`_KindSpecialProfile`, goroutine statuses), and the
//! wait reasons by number. From the target's own DWARF when it has one; otherwise from
//! a table generated from every supported toolchain (`tables.rs`, written by
//! `cargo xtask go-tables`), by Go minor version. A version in neither is refused.

use super::{
    Error, Result,
    binary::Binary,
    dwarf::DwarfInfo,
    offsets::RuntimeOffsets,
    symbols::{RuntimeSymbols, read_wait_reasons},
};

/// A Go runtime's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The Go minor version it is for (1.`minor`).
    pub minor: u32,
    pub offsets: RuntimeOffsets,
    /// `runtime._KindSpecialProfile`: the kind of the special a sampled object carries.
    pub special_profile: u64,
    /// Goroutine statuses: `_Gwaiting`, and `_Gleaked` (Go 1.26+).
    pub g_waiting: u64,
    pub g_leaked: Option<u64>,
    /// `runtime.waitReasonStrings`, by number.
    pub wait_reasons: Vec<String>,
}

/// Where a layout came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Dwarf,
    Table,
}

impl Layout {
    /// The layout of `bin` (Go 1.`minor`): from its DWARF, else the table.
    pub fn of(bin: &Binary<'_>, minor: u32, symbols: &RuntimeSymbols) -> Result<(Self, Source)> {
        if let Some(dwarf) = DwarfInfo::load(bin)? {
            return Ok((Self::from_dwarf(bin, &dwarf, minor, symbols)?, Source::Dwarf));
        }
        let mut layout =
            super::tables::layout(minor).ok_or(Error::Unsupported("a Go version without a layout table"))?;
        // The binary's own strings, when they can be found, over the table's.
        if let Some(reasons) = symbols.wait_reason_strings.and_then(|t| read_wait_reasons(bin, t)) {
            layout.wait_reasons = reasons;
        }
        Ok((layout, Source::Table))
    }

    pub fn from_dwarf(
        bin: &Binary<'_>,
        dwarf: &DwarfInfo<'_>,
        minor: u32,
        symbols: &RuntimeSymbols,
    ) -> Result<Self> {
        let constant = |name| dwarf.constant(name).and_then(|v| u64::try_from(v).ok());
        Ok(Self {
            minor,
            offsets: RuntimeOffsets::from_dwarf(dwarf)?,
            special_profile: constant("runtime._KindSpecialProfile")
                .ok_or(Error::NotFound("_KindSpecialProfile"))?,
            g_waiting: constant("runtime._Gwaiting").ok_or(Error::NotFound("_Gwaiting"))?,
            g_leaked: constant("runtime._Gleaked"),
            wait_reasons: symbols
                .wait_reason_strings
                .and_then(|t| read_wait_reasons(bin, t))
                .unwrap_or_default(),
        })
    }

    /// The Rust expression that builds this layout (for the generated table): Debug
    /// output is Rust syntax for these plain structs, lists and options.
    /// The code of a function `go1_MINOR` that makes this layout, and of the constant
    /// `WAIT_REASONS_MINOR` it uses (as `tables.rs` has them).
    pub fn to_rust(&self) -> String {
        format!(
            "fn go1_{minor}() -> Layout {{ Layout {{ minor: {minor}, offsets: {:?}, special_profile: {}, \
             g_waiting: {}, g_leaked: {:?}, wait_reasons: strings(WAIT_REASONS_{minor}) }} }}\n\n\
             const WAIT_REASONS_{minor}: &[&str] = &{:?};",
            self.offsets,
            self.special_profile,
            self.g_waiting,
            self.g_leaked,
            self.wait_reasons,
            minor = self.minor,
        )
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_supported_version_has_a_complete_table() {
        for minor in 19..=27 {
            let layout =
                super::super::tables::layout(minor).unwrap_or_else(|| panic!("no table for 1.{minor}"));
            assert_eq!(layout.minor, minor);
            assert!(layout.wait_reasons.len() > 20, "1.{minor}: {} wait reasons", layout.wait_reasons.len());
            assert!(layout.wait_reasons.iter().any(|r| r == "chan send"), "1.{minor}");
            assert_eq!(layout.g_leaked.is_some(), minor >= 26, "1.{minor}");
            assert_eq!(layout.offsets.g_parent_goid.is_some(), minor >= 21, "1.{minor}");
        }
        assert!(super::super::tables::layout(99).is_none(), "an unknown version is refused, not guessed");
    }

    #[test]
    fn a_table_entry_prints_as_the_code_that_makes_it() {
        let layout = super::super::tables::layout(27).unwrap();
        let code = layout.to_rust();
        assert!(
            code.contains("fn go1_27() -> Layout")
                && code.contains("minor: 27")
                && code.contains("g_goid: 152")
                && code.contains("g_leaked: Some(10)")
                && code.contains("const WAIT_REASONS_27"),
            "{code}"
        );
    }
}
