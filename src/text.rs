//! Text from outside shown to a person or a model: which characters can make it show one thing
//! and mean another, and a form of it safe to print on one line.

/// Whether `c` can make text show one thing to a person and another to a model (threat 54):
/// invisible characters (zero-width, joiners, fillers, variation selectors, tags, the BOM),
/// characters that change the direction text is shown in (bidi embeddings, overrides,
/// isolates and marks), line and paragraph separators, other format characters, and private
/// use characters (shown as whatever a font makes of them).
pub fn is_deceptive_char(c: char) -> bool {
    matches!(c as u32,
        0x00AD // soft hyphen
        | 0x034F // combining grapheme joiner
        | 0x061C // Arabic letter mark
        | 0x0600..=0x0605 | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2 // Arabic format marks
        | 0x115F..=0x1160 | 0x3164 | 0xFFA0 // Hangul fillers
        | 0x17B4..=0x17B5 // Khmer inherent vowels (invisible)
        | 0x180B..=0x180F // Mongolian variation selectors and vowel separator
        | 0x200B..=0x200F // zero-width space, non-joiner, joiner; LRM, RLM
        | 0x2028..=0x202E // line and paragraph separators; LRE, RLE, PDF, LRO, RLO
        | 0x2060..=0x206F // word joiner, invisible operators, LRI, RLI, FSI, PDI, deprecated
        | 0xFE00..=0xFE0F // variation selectors
        | 0xFEFF // zero-width no-break space (BOM)
        | 0xFFF0..=0xFFF8 // unassigned, default ignorable (a font draws nothing)
        | 0xFFF9..=0xFFFB // interlinear annotation
        | 0xE000..=0xF8FF // private use
        | 0x110BD | 0x110CD // Kaithi number signs
        | 0x1BCA0..=0x1BCA3 // shorthand format controls
        | 0x1D173..=0x1D17A // musical format characters
        | 0x2800 // braille pattern blank (shows as a space)
        | 0x13430..=0x1343F // Egyptian hieroglyph format controls
        | 0xE0000..=0xE0FFF // tag characters, variation selectors supplement and the rest of
                           // the plane's default-ignorable block (unassigned: drawn as nothing)
        | 0xF0000..=0x10FFFF // supplementary private use
    )
}

/// `text` safe to show on one line of a terminal, a log or a model's input: every control
/// character (newlines, escape sequences, C1 controls, tabs) becomes a space, and every
/// [deceptive character](is_deceptive_char) a `?`.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                ' '
            } else if is_deceptive_char(c) {
                '?'
            } else {
                c
            }
        })
        .collect()
}
