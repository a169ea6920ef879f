"""Fig. 8 (MovieLens in the paper): AUC / ACC of the tuned model under four inference-time retrievals (Recent,
Retri.-then-Mix, Mix-then-Retri., ReRank), for one or two tuning sets, each a pipeline run of its own:

  python experiments/pipeline.py --config configs/movielens.py --workdir /abs/work_rag
  python experiments/pipeline.py --config configs/movielens.py --workdir /abs/work_recent --config.pipeline.train_kind=""
  python experiments/figure8.py --workdirs=/abs/work_rag,/abs/work_recent --out=/abs/figure8.png
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # rallrec_jax importable

from absl import app, flags  # noqa: E402

from rallrec_jax import pipeline  # noqa: E402

_WORKDIRS = flags.DEFINE_list("workdirs", None, "one or two pipeline workdirs (one per tuning set)")
_OUT = flags.DEFINE_string("out", None, "PNG path (JSON beside it); default <first workdir>/report/figure8_all.png")
flags.mark_flags_as_required(["workdirs"])


def main(argv):
    del argv
    result = pipeline.figure8([os.path.abspath(w) for w in _WORKDIRS.value],
                              os.path.abspath(_OUT.value) if _OUT.value else None)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
