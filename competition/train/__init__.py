"""Train stage: a run from settings to run folder.

loop (one run, start to end) over data (photos, variants, validation folds), last_layer
(frozen backbone: learned whitening or a loss head on cached features) and full_layer (every
weight, with the safety options of safety and freezing); validation scores folds against the
pretrained backbone; label_fusion, postprocess_choice and pseudo choose on the folds what
submit will do; run and run_folder keep what a run writes.
"""
