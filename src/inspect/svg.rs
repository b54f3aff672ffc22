//! Drawing a [`Picture`] as SVG, and the self-contained HTML page around
//! it.
//!
//! Owns: the XML writer (every name and path escaped), the layout (a fixed
//! width; long segments wrap onto more lines, never widen the picture), the
//! legend and the colours. Must never: compute a figure; everything drawn
//! or written comes from the [`Picture`], which comes from a report. No
//! script, no external resource: the files open offline in any browser.

use std::fmt::Write as _;

use super::picture::{Cell, Picture, SegmentPicture, StripCell};
use super::proc::PageClass;

/// The picture's width in pixels, whatever the library's size.
pub const WIDTH: u32 = 1200;
const MARGIN: u32 = 16;
/// Room left of the cells for the strip labels.
const LABEL_W: u32 = 150;
const X0: u32 = MARGIN + LABEL_W;
/// A one-page cell and the gap after it.
const STEP: u32 = 14;
/// The same for a one-page run in an aggregated segment: narrower, since a
/// run is as many steps wide as the bits in its length.
const RUN_STEP: u32 = 7;
const LINE_W: u32 = WIDTH - X0 - MARGIN;
const CELL_H: u32 = 16;
const STRIP_STEP: u32 = 18;
const MARK_H: u32 = 5;
const TEXT_STEP: u32 = 16;
/// Sections listed in a segment's header before "…" (all in its title).
const SECTIONS_CHARS: usize = 150;

/// Fill of each page state; also what the PNG test looks for.
pub fn colour(class: PageClass) -> &'static str {
    match class {
        PageClass::Absent => "#e4e4e4",
        PageClass::Zero => "#b3c3cc",
        PageClass::Shared => "#2c7bb6",
        PageClass::PrivateClean => "#1a9641",
        PageClass::PrivateDirty => "#d7191c",
    }
}

/// Escape text or an attribute value for XML. Characters XML 1.0 cannot
/// hold at all (most control characters, which a file name may contain)
/// become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A minimal XML writer: elements open and close in order, every attribute
/// and text escaped. One element per line keeps the output diffable.
#[derive(Default)]
pub struct Xml {
    out: String,
    open: Vec<&'static str>,
}

impl Xml {
    fn start(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        for _ in 0..self.open.len() {
            self.out.push(' ');
        }
        let _ = write!(self.out, "<{tag}");
        for (k, v) in attrs {
            let _ = write!(self.out, " {k}=\"{}\"", escape(v));
        }
    }

    pub fn open(&mut self, tag: &'static str, attrs: &[(&str, &str)]) {
        self.start(tag, attrs);
        self.out.push_str(">\n");
        self.open.push(tag);
    }

    pub fn empty(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.start(tag, attrs);
        self.out.push_str("/>\n");
    }

    /// An element holding only text.
    pub fn leaf(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) {
        self.start(tag, attrs);
        let _ = writeln!(self.out, ">{}</{tag}>", escape(text));
    }

    /// Already-written XML (a part drawn before its container's size was
    /// known).
    fn raw(&mut self, xml: &str) {
        self.out.push_str(xml);
    }

    pub fn close(&mut self) {
        if let Some(tag) = self.open.pop() {
            for _ in 0..self.open.len() {
                self.out.push(' ');
            }
            let _ = writeln!(self.out, "</{tag}>");
        }
    }

    pub fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.close();
        }
        self.out
    }
}

fn style() -> String {
    let mut css = String::from(
        "text{font-family:'DejaVu Sans Mono',monospace;font-size:12px;fill:#222}\
         .title{font-size:18px;font-weight:bold}.obj{font-size:14px;font-weight:bold}\
         .dim{fill:#666}.strip{font-size:11px;fill:#555}.mark{pointer-events:none}",
    );
    for c in PageClass::ALL {
        let _ = write!(css, ".{}{{fill:{}}}", c.css(), colour(c));
    }
    css
}

/// Where the drawing has got to.
struct Canvas {
    xml: Xml,
    y: u32,
}

impl Canvas {
    fn text(&mut self, class: &str, x: u32, s: &str) {
        let (x, y) = (x.to_string(), self.y.to_string());
        let mut attrs = vec![("x", x.as_str()), ("y", y.as_str())];
        if !class.is_empty() {
            attrs.insert(0, ("class", class));
        }
        self.xml.leaf("text", &attrs, s);
    }

    /// One line of text, then move down.
    fn line(&mut self, class: &str, s: &str) {
        self.y += TEXT_STEP;
        self.text(class, MARGIN, s);
    }
}

/// The picture as a standalone SVG document.
pub fn svg(p: &Picture) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}",
        svg_element(p)
    )
}

/// The `<svg>` element alone, for embedding in HTML.
pub fn svg_element(p: &Picture) -> String {
    let mut c = Canvas {
        xml: Xml::default(),
        y: MARGIN,
    };
    c.y += 6;
    c.text("title", MARGIN, &p.title);
    for l in &p.lines {
        c.line("dim", l);
    }
    legend(&mut c, p);
    for o in &p.objects {
        c.y += 14;
        let name = o.name.as_str();
        let mut attrs = vec![
            ("class", "object".to_string()),
            ("data-name", o.name.clone()),
        ];
        if let Some(t) = &o.totals {
            attrs.push(("data-pages", t.pages.to_string()));
            attrs.push(("data-resident", list(&t.resident)));
            attrs.push(("data-zero", list(&t.zero)));
        }
        let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        c.xml.open("g", &attrs);
        c.line("obj", name);
        if !o.detail.is_empty() {
            c.line("dim", &o.detail);
        }
        for s in &o.segments {
            segment(&mut c, p, name, s);
        }
        c.xml.close();
    }
    totals(&mut c, p);
    let height = c.y + MARGIN;
    let body = c.xml.finish();
    let mut x = Xml::default();
    let (w, h) = (WIDTH.to_string(), height.to_string());
    x.open(
        "svg",
        &[
            ("xmlns", "http://www.w3.org/2000/svg"),
            ("width", &w),
            ("height", &h),
            ("viewBox", &format!("0 0 {w} {h}")),
        ],
    );
    x.leaf("title", &[], &p.title);
    x.leaf("style", &[], &style());
    x.empty(
        "rect",
        &[("width", &w), ("height", &h), ("fill", "#ffffff")],
    );
    x.raw(&body);
    x.finish()
}

fn list(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn legend(c: &mut Canvas, p: &Picture) {
    c.y += 12;
    c.xml.open("g", &[("class", "legend")]);
    let mut x = MARGIN;
    let top = c.y;
    for class in PageClass::ALL {
        c.xml.empty(
            "rect",
            &[
                ("class", &format!("swatch {}", class.css())),
                ("x", &x.to_string()),
                ("y", &top.to_string()),
                ("width", "16"),
                ("height", "16"),
            ],
        );
        let label = class.label();
        c.y = top + 13;
        c.text("", x + 22, label);
        x += 22 + 8 * label.len() as u32 + 24;
    }
    c.y = top + 16;
    c.line(
        "dim",
        "shared: the frame has two page-table mappings or more (kpagecount, or pagemap's exclusive bit);",
    );
    c.line(
        "dim",
        "private clean: a page-cache page only this process maps; private dirty: a copy-on-write copy or anonymous memory",
    );
    if p.frames {
        c.line(
            "dim",
            "the coloured bar under a resident cell marks its physical frames: one colour in several strips is one physical copy",
        );
    } else {
        c.line(
            "dim",
            "physical frames are hidden without CAP_SYS_ADMIN: no frame marks, and no counts of sharers",
        );
    }
    c.line(
        "dim",
        &format!(
            "segments over {} pages draw runs of pages: a cell is a run in one state, its width grows with log2 of its length; hover for counts",
            super::picture::PAGES_DRAWN_ONE_BY_ONE
        ),
    );
    c.xml.close();
}

/// A cell's width, with the gap after it.
fn cell_width(s: &SegmentPicture, cell: &Cell) -> u32 {
    if s.aggregated {
        ((1 + cell.pages.max(1).ilog2()) * RUN_STEP).min(LINE_W)
    } else {
        STEP
    }
}

fn segment(c: &mut Canvas, p: &Picture, object: &str, s: &SegmentPicture) {
    let vaddr = format!("{:#x}-{:#x}", s.vaddr.0, s.vaddr.1);
    c.xml.open(
        "g",
        &[
            ("class", "segment"),
            ("data-object", object),
            ("data-role", &s.role),
            ("data-vaddr", &vaddr),
            ("data-pages", &s.pages.to_string()),
        ],
    );
    c.y += 6;
    c.line(
        "",
        &format!(
            "{}  {}  {vaddr}  {} page{}  {}",
            s.role,
            s.perms,
            s.pages,
            if s.pages == 1 { "" } else { "s" },
            s.summary
        ),
    );
    if !s.sections.is_empty() {
        let all = s.sections.join(" ");
        let shown: String = all.chars().take(SECTIONS_CHARS).collect();
        let more = if shown.len() < all.len() { " …" } else { "" };
        c.y += TEXT_STEP;
        c.xml.open(
            "text",
            &[
                ("class", "dim"),
                ("x", &MARGIN.to_string()),
                ("y", &c.y.to_string()),
            ],
        );
        c.xml.leaf("title", &[], &all);
        c.xml.leaf("tspan", &[], &format!("{shown}{more}"));
        c.xml.close();
    }
    c.y += 6;
    // Lay the cells out in lines of at most LINE_W pixels.
    let mut lines: Vec<Vec<&Cell>> = vec![Vec::new()];
    let mut used = 0;
    for cell in &s.cells {
        let u = cell_width(s, cell);
        if used + u > LINE_W && used > 0 {
            lines.push(Vec::new());
            used = 0;
        }
        if let Some(l) = lines.last_mut() {
            l.push(cell);
        }
        used += u;
    }
    for line in lines {
        cell_line(c, p, object, s, &line);
    }
    c.xml.close();
}

fn cell_line(c: &mut Canvas, p: &Picture, object: &str, s: &SegmentPicture, cells: &[&Cell]) {
    for (k, label) in p.strips.iter().enumerate() {
        let y = c.y + k as u32 * STRIP_STEP;
        let saved = c.y;
        c.y = y + CELL_H - 4;
        c.text("strip", MARGIN, label);
        c.y = saved;
        let mut x = X0;
        for cell in cells {
            let w = cell_width(s, cell) - 1;
            if let Some(sc) = cell.strips.get(k) {
                draw_cell(c, p, (object, s), (x, y, w), (k, cell, sc));
            }
            x += w + 1;
        }
    }
    c.y += p.strips.len() as u32 * STRIP_STEP + 4;
}

fn draw_cell(
    c: &mut Canvas,
    p: &Picture,
    (object, s): (&str, &SegmentPicture),
    (x, y, w): (u32, u32, u32),
    (strip, cell, sc): (usize, &Cell, &StripCell),
) {
    let mark = sc.mark.map(|m| format!("{m:016x}"));
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
    if let Some(m) = &mark {
        attrs.push(("data-mark", m.clone()));
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
    let first = s.vaddr.0 + cell.first * super::PAGE;
    let end = first + cell.pages * super::PAGE;
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
    t
}

/// A saturated colour for a frame mark, from its hash.
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

fn totals(c: &mut Canvas, p: &Picture) {
    c.y += 12;
    let t = &p.totals;
    let physical = t.physical.map_or(String::new(), |v| v.to_string());
    c.xml.open(
        "g",
        &[
            ("class", "totals"),
            ("data-pages", &t.pages.to_string()),
            ("data-resident", &list(&t.resident)),
            ("data-zero", &list(&t.zero)),
            ("data-physical", &physical),
        ],
    );
    c.line("obj", "totals");
    for l in &p.total_lines {
        c.line("", l);
    }
    c.xml.close();
    for n in &p.notes {
        c.line("dim", &format!("note: {n}"));
    }
}

/// A self-contained page: the picture, then the text report as a table.
pub fn html(p: &Picture, report: &str) -> String {
    let title = escape(&p.title);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
         <style>body{{font-family:sans-serif;margin:16px;background:#fff;color:#222}}\
         pre{{font-size:12px;background:#f6f6f6;padding:8px;overflow-x:auto}}</style>\n</head>\n<body>\n\
         {}<h2>The numbers</h2>\n<pre>{}</pre>\n</body>\n</html>\n",
        svg_element(p),
        escape(report)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_what_xml_cannot_hold() {
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escape("x\u{1}y"), "x\u{fffd}y");
    }

    #[test]
    fn writer_nests_and_closes() {
        let mut x = Xml::default();
        x.open("g", &[("data-name", "<lib>")]);
        x.leaf("text", &[], "a&b");
        assert_eq!(
            x.finish(),
            "<g data-name=\"&lt;lib&gt;\">\n <text>a&amp;b</text>\n</g>\n"
        );
    }

    #[test]
    fn marks_are_opaque_colours() {
        for m in [0, 59, 60, 179, 359, u64::MAX] {
            let c = hue_colour(m);
            assert_eq!(c.len(), 7, "{c}");
        }
    }
}
