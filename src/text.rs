//! Text folding for matching what people type against what they wrote: the user directory
//! and message search fold both sides the same way.

use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};

/// Lower case, compatibility forms unified, marks dropped, in every script: `Zoë` and
/// `ZOE` meet, as do `Κόσμε` and `κοσμε`.
pub fn fold(text: &str) -> String {
    text.nfkd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn folding_drops_case_and_diacritics_in_any_script() {
        assert_eq!(super::fold("Zoë ÅNGSTRÖM"), "zoe angstrom");
        assert_eq!(super::fold("Ωμέγα"), "ωμεγα");
        // Marks go in every script (й folds as и); the stored text and the search term are
        // both folded, so they still meet.
        assert_eq!(super::fold("ДМИТРИЙ"), super::fold("дмитрий"));
        assert_eq!(super::fold("東京"), "東京");
        assert_eq!(super::fold("ﬁ①"), "fi1");
    }
}
