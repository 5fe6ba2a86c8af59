"""Helpers the tests share: tiny random models of each family (:mod:`.tiny_models`), the float64
reference optimizer (:mod:`.reference_tam`), the real-task MTEB fixture cache
(:mod:`.mteb_fixture`), a one-node Slurm cluster (:mod:`.slurm_cluster`), and the workers of the
multi-process runs (:mod:`.dist_worker`, :mod:`.ds_worker`, :mod:`.fsdp_worker`,
:mod:`.fsdp2_mlm_worker`, :mod:`.ds_trainer_script`)."""
