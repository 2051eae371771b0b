"""``dhian quickstart``: options (:mod:`.options`), its run directory (:mod:`.run_dir`), the
run itself (:mod:`.run`) and the test-split evaluation + report (:mod:`.evaluate`)."""
