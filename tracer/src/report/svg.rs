//! A flame graph SVG of the live memory, drawn by inferno from the folded stacks: memory
//! palette, colours chosen from function names (the same input draws the same picture),
//! titled with the target and the time.

use std::io;

use inferno::flamegraph::{
    self, Options,
    color::{BasicPalette, Palette},
};

use super::{folded::folded, model::Report, text::bytes};
use crate::config::{ExportOptions, Weight};

pub fn svg(report: &Report, export: &ExportOptions) -> io::Result<Vec<u8>> {
    let (weight, only_leaks) = (export.weight, export.only_leaks);
    let stacks = folded(report, export);
    let mut options = Options::default();
    options.title = format!(
        "leaktracer: pid {} {}: {}live {}",
        report.target.pid,
        report.target.exe,
        if only_leaks { "leaking, " } else { "" },
        match weight {
            Weight::Bytes => "bytes",
            Weight::Count => "blocks",
        }
    );
    options.subtitle = Some(format!(
        "{:.0} s traced until {}; {} live heap, {} live mappings",
        report.elapsed_s,
        report.time,
        bytes(report.process.heap_live_bytes),
        bytes(report.process.mapped_live_bytes)
    ));
    options.count_name = match weight {
        Weight::Bytes => "bytes",
        Weight::Count => "blocks",
    }
    .to_string();
    options.name_type = "Site:".to_string();
    options.colors = Palette::Basic(BasicPalette::Mem);
    options.deterministic = true;
    let mut out = Vec::new();
    if stacks.is_empty() {
        // inferno refuses empty input; say so in a picture all the same.
        out.extend_from_slice(
            format!(
                "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" width=\"1200\" height=\"60\" \
                 xmlns=\"http://www.w3.org/2000/svg\"><text x=\"600\" y=\"35\" text-anchor=\"middle\">{}: \
                 nothing outstanding</text></svg>\n",
                escape(&options.title)
            )
            .as_bytes(),
        );
        return Ok(out);
    }
    flamegraph::from_lines(&mut options, stacks.lines(), &mut out)?;
    Ok(out)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::folded::tests::{report, site};

    #[test]
    fn draws_the_leaking_function_and_the_same_picture_twice() {
        let r = report(vec![site(
            "s1",
            crate::report::model::VerdictName::Leak,
            (2, 4096),
            &[(Some("intern_all"), "0x1010"), (Some("main"), "0x1100")],
        )]);
        let export = ExportOptions::default();
        let svg = svg(&r, &export).unwrap();
        let text = String::from_utf8(svg.clone()).unwrap();
        assert!(text.contains("intern_all"));
        assert!(text.contains("leaktracer: pid 1"));
        assert_eq!(svg, super::svg(&r, &export).unwrap(), "deterministic");
        let empty = super::svg(&report(vec![]), &export).unwrap();
        assert!(String::from_utf8(empty).unwrap().contains("nothing outstanding"));
    }
}
