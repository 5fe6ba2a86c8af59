"""What the training app (``recipes``) and the evaluation (``evaluation``) both use, importing
neither: atomic files (:mod:`.files`), locks (:mod:`.locks`), a checkpoint's weight files and
their one hash (:mod:`.weights`), SLURM array scripts (:mod:`.slurm`)."""
