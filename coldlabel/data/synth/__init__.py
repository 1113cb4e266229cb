"""Synthetic benchmark in the Amazon 2014 5-core raw format, with a planted truth.

    from coldlabel.data import synth
    summary = synth.generate("tiny", root, seed=0)   # root/raw/*.json.gz, root/truth/truth.json.gz

Command line: ``python -m coldlabel.data.synth PRESET OUT_DIR [SEED]``.

Modules: ``generate`` (the generative story, one function per step), ``items`` (brand names, item attributes
and text), ``presets`` (``SynthConfig``, the presets, ``SynthSummary``), ``vocabulary`` (taxonomy trees,
attribute pools, word lists), ``world`` (the state the steps hand each other), ``writers`` (the byte-stable
gzip file writers).
"""
from coldlabel.data.synth.generate import generate
from coldlabel.data.synth.presets import MIN_REVIEWS, PRESETS, TRAIN_RATIO, SynthConfig, SynthSummary
from coldlabel.data.synth.vocabulary import ROOTS, TaxonomyLeaf, attribute_pool, taxonomy

__all__ = ["MIN_REVIEWS", "PRESETS", "ROOTS", "TRAIN_RATIO", "SynthConfig", "SynthSummary", "TaxonomyLeaf",
           "attribute_pool", "generate", "taxonomy"]
