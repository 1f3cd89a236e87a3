"""WordNet from the installed data files: base forms, synonyms, opposites, and a word it lacks."""

from integrations.lexicon import wordnet


def test_synonyms_share_a_frequent_sense_or_name_a_manner_of_it():
    lexicon = wordnet()
    assert lexicon.synonyms("choose", "select") and lexicon.synonyms("repairs", "fixed")
    assert lexicon.synonyms("delete", "remove")  # deleting is a way of removing
    assert not lexicon.synonyms("delete", "add") and not lexicon.synonyms("memory", "disk")
    assert not lexicon.synonyms("fix", "localization")  # a rare sense of "fix" does not count
    assert not lexicon.synonyms("remove", "remove")


def test_antonyms_through_inflections_and_irregular_forms():
    lexicon = wordnet()
    assert lexicon.antonyms("faster", "slower") and lexicon.antonyms("bought", "sells")
    assert lexicon.antonyms("enable", "disable") and lexicon.antonyms("minimum", "maximum")
    assert not lexicon.antonyms("choose", "select") and not lexicon.antonyms("fast", "quick")


def test_a_word_wordnet_lacks_has_no_senses():
    assert wordnet().senses("reranker") == frozenset()
    assert wordnet().senses("zzzz") == frozenset()
