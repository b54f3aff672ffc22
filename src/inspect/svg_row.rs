//! One object of a picture, drawn: its segments side by side in a row that
//! wraps at the picture's fixed width, one strip per process under each
//! segment's role, then one key line per segment (role, permissions,
//! addresses, figures, sections).
//!
//! Owns: where each cell goes, its title and its frame mark. Must never:
//! compute a figure (cells, titles and key lines say what the
//! [`Picture`] holds) or widen the picture.

use std::fmt::Write as _;

use super::PAGE;
use super::picture::{Cell, ObjectPicture, Picture, SegmentPicture, StripCell};
use super::proc::PageClass;
use super::svg::{Canvas, LINE_W, MARGIN, TEXT_STEP, X0};

/// A one-page cell and the gap after it.
const STEP: u32 = 14;
/// The same for a one-page run in an aggregated segment: narrower, since a
/// run is as many steps wide as the bits in its length.
const RUN_STEP: u32 = 7;
const CELL_H: u32 = 16;
const STRIP_STEP: u32 = 18;
const MARK_H: u32 = 5;
/// Room above the strips for the segments' role labels.
const LABEL_H: u32 = 16;
/// Space between two segments on one line.
const SEG_GAP: u32 = 12;
/// Roughly one character of the 12px monospace font.
const CHAR_W: u32 = 8;
/// Characters of a key line that fit the width (the 12px monospace font is
/// about 7.2px a character); the rest becomes "…", the sections all in its
/// title.
const KEY_CHARS: usize = 155;

/// A cell's width, with the gap after it.
fn cell_width(s: &SegmentPicture, cell: &Cell) -> u32 {
    if s.aggregated {
        ((1 + cell.pages.max(1).ilog2()) * RUN_STEP).min(LINE_W)
    } else {
        STEP
    }
}

/// Where things go: line numbers and x offsets within the cell area.
struct Placement<'a> {
    /// (segment, line, x, continued) of each segment's labels: one where
    /// it starts, one more on each line its cells wrap onto.
    labels: Vec<(usize, u32, u32, bool)>,
    /// (segment, line, x, width, cell).
    cells: Vec<(usize, u32, u32, u32, &'a Cell)>,
    lines: u32,
}

/// Flow the segments left to right, wrapping cells onto the next line at
/// the fixed width. A segment starts on a new line when it would not fit
/// in what is left of this one, unless it does not fit on any line and at
/// least a quarter of this one is free.
fn place(o: &ObjectPicture) -> Placement<'_> {
    let mut p = Placement {
        labels: Vec::new(),
        cells: Vec::new(),
        lines: 1,
    };
    let (mut line, mut x) = (0, 0);
    for (k, s) in o.segments.iter().enumerate() {
        let cells_w: u32 = s.cells.iter().map(|c| cell_width(s, c)).sum();
        let label_w = s.role.chars().count() as u32 * CHAR_W;
        let box_w = cells_w.max(label_w);
        let fits_here = x + box_w <= LINE_W;
        if x > 0 && !fits_here && (box_w <= LINE_W || LINE_W - x < LINE_W / 4) {
            line += 1;
            x = 0;
        }
        let (start_line, start_x) = (line, x);
        p.labels.push((k, line, x, false));
        for cell in &s.cells {
            let w = cell_width(s, cell);
            if x + w > LINE_W && x > 0 {
                line += 1;
                x = 0;
                p.labels.push((k, line, x, true));
            }
            p.cells.push((k, line, x, w, cell));
            x += w;
        }
        if line == start_line {
            x = x.max(start_x + label_w);
        }
        x += SEG_GAP;
    }
    p.lines = line + 1;
    p
}

fn line_height(p: &Picture) -> u32 {
    LABEL_H + p.strips.len() as u32 * STRIP_STEP + 6
}

/// Draw the object's segments and key lines; `c.y` moves past them.
pub(super) fn object_row(c: &mut Canvas, p: &Picture, o: &ObjectPicture) {
    let placed = place(o);
    let top = c.y + 6;
    let line_y = |line: u32| top + line * line_height(p);
    for line in 0..placed.lines {
        for (k, label) in p.strips.iter().enumerate() {
            let y = line_y(line) + LABEL_H + k as u32 * STRIP_STEP + CELL_H - 4;
            c.text_at("strip", MARGIN, y, label);
        }
    }
    for (k, s) in o.segments.iter().enumerate() {
        let vaddr = format!("{:#x}-{:#x}", s.vaddr.0, s.vaddr.1);
        c.xml.open(
            "g",
            &[
                ("class", "segment"),
                ("data-object", &o.name),
                ("data-role", &s.role),
                ("data-vaddr", &vaddr),
                ("data-pages", &s.pages.to_string()),
            ],
        );
        for &(_, line, x, continued) in placed.labels.iter().filter(|l| l.0 == k) {
            let y = line_y(line) + LABEL_H - 4;
            if continued {
                c.text_at("dim", X0 + x, y, &format!("{} (continued)", s.role));
            } else {
                c.text_at("role", X0 + x, y, &s.role);
            }
        }
        for &(_, line, x, w, cell) in placed.cells.iter().filter(|e| e.0 == k) {
            for (strip, sc) in cell.strips.iter().enumerate() {
                let y = line_y(line) + LABEL_H + strip as u32 * STRIP_STEP;
                draw_cell(c, p, (&o.name, s), (X0 + x, y, w - 1), (strip, cell, sc));
            }
        }
        c.xml.close();
    }
    c.y = line_y(placed.lines) + 4;
    c.xml.open("g", &[("class", "keys")]);
    for s in &o.segments {
        key_line(c, s);
    }
    c.xml.close();
}

/// Role, permissions, addresses, figures and sections of one segment.
fn key_line(c: &mut Canvas, s: &SegmentPicture) {
    let mut line = format!(
        "{} · {} · {:#x}-{:#x} · {} page{} · {}",
        s.role,
        s.perms,
        s.vaddr.0,
        s.vaddr.1,
        s.pages,
        if s.pages == 1 { "" } else { "s" },
        s.summary
    );
    let all = s.sections.join(" ");
    c.y += TEXT_STEP;
    let y = c.y.to_string();
    c.xml.open(
        "text",
        &[("class", "key"), ("x", &MARGIN.to_string()), ("y", &y)],
    );
    if !all.is_empty() {
        c.xml.leaf("title", &[], &all);
        let _ = write!(line, " · {all}");
    }
    if line.chars().count() > KEY_CHARS {
        line = line.chars().take(KEY_CHARS - 2).collect();
        line.push_str(" …");
    }
    c.xml.leaf("tspan", &[], &line);
    c.xml.close();
}

fn draw_cell(
    c: &mut Canvas,
    p: &Picture,
    (object, s): (&str, &SegmentPicture),
    (x, y, w): (u32, u32, u32),
    (strip, cell, sc): (usize, &Cell, &StripCell),
) {
    let mut attrs = vec![
        ("class", sc.class.css().to_string()),
        ("x", x.to_string()),
        ("y", y.to_string()),
        ("width", w.to_string()),
        ("height", CELL_H.to_string()),
        ("data-strip", strip.to_string()),
        ("data-first", cell.first.to_string()),
        ("data-pages", cell.pages.to_string()),
    ];
    if let Some(m) = sc.mark {
        attrs.push(("data-mark", format!("{m:016x}")));
    }
    let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    c.xml.open("rect", &attrs);
    c.xml
        .leaf("title", &[], &cell_title(p, (object, s), strip, cell, sc));
    c.xml.close();
    if let Some(m) = sc.mark {
        c.xml.empty(
            "rect",
            &[
                ("class", "mark"),
                ("x", &x.to_string()),
                ("y", &(y + CELL_H - MARK_H).to_string()),
                ("width", &w.to_string()),
                ("height", &MARK_H.to_string()),
                ("fill", &hue_colour(m)),
            ],
        );
    }
}

fn cell_title(
    p: &Picture,
    (object, s): (&str, &SegmentPicture),
    strip: usize,
    cell: &Cell,
    sc: &StripCell,
) -> String {
    let first = s.vaddr.0 + cell.first * PAGE;
    let end = first + cell.pages * PAGE;
    let which = if cell.pages == 1 {
        format!("page {} (1 page", cell.first)
    } else {
        format!(
            "pages {}-{} ({} pages",
            cell.first,
            cell.first + cell.pages - 1,
            cell.pages
        )
    };
    let strip_label = p.strips.get(strip).map_or("", String::as_str);
    let mut t = format!(
        "{object} {}, {which}, vaddr {first:#x}-{end:#x}), {strip_label}: {}",
        s.role,
        sc.class.label()
    );
    let n = p.strips.len();
    match sc.class {
        PageClass::Shared | PageClass::PrivateClean | PageClass::PrivateDirty if p.frames => {
            if n > 1 {
                let _ = write!(
                    t,
                    "; the same frames are mapped in {} of {n} strips",
                    sc.sharers
                );
            }
            if let Some((a, b)) = sc.mapcount {
                let range = if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                };
                let _ = write!(t, "; kpagecount {range} (mappings system-wide)");
            }
        }
        PageClass::Shared => t.push_str("; pagemap: not exclusively mapped"),
        _ => {}
    }
    match sc.class {
        PageClass::PrivateDirty => t.push_str("; a copy-on-write copy or anonymous memory"),
        PageClass::PrivateClean => t.push_str("; a page-cache page"),
        _ => {}
    }
    if sc.cache_dirty > 0 {
        let _ = write!(
            t,
            "; {} of these pages hold file changes not yet written back (smaps counts those dirty)",
            sc.cache_dirty
        );
    }
    t
}

/// A light, saturated colour for a frame mark, from its hash.
fn hue_colour(mark: u64) -> String {
    let h = (mark % 360) as f64;
    let (s, l) = (0.9, 0.72);
    let c = (1.0 - (2.0 * l - 1.0_f64).abs()) * s;
    let x = c * (1.0 - ((h / 60.0) % 2.0 - 1.0).abs());
    let m = l - c / 2.0;
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let byte = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    format!("#{:02x}{:02x}{:02x}", byte(r), byte(g), byte(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_opaque_colours() {
        for m in [0, 59, 60, 179, 359, u64::MAX] {
            let c = hue_colour(m);
            assert_eq!(c.len(), 7, "{c}");
        }
    }
}
