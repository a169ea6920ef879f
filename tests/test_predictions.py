"""The per-row predictions CSV, against hand-written text."""
import numpy as np
import pytest

from rallrec_jax.generation import predictions


def test_csv_text_and_prefix_columns():
    text = predictions.predictions_csv(np.array([5, 2, 9]), np.array(["u1", "u,2", "u3"]), np.array(["a", "b", "c"]),
                                       np.array([1, 0, 1]), {"zero": np.array([0.1, 0.25, 1 / 3]),
                                                              "head": np.array([0.5])})
    assert text == ('row_id,user_id,item_id,label,zero,head\n'
                    '5,u1,a,1,0.1,0.5\n'
                    '2,"u,2",b,0,0.25,\n'
                    f'9,u3,c,1,{1 / 3!r},\n')


def test_bad_columns_are_named():
    ids = np.arange(2)
    with pytest.raises(ValueError, match="column 'long' has 3 probabilities for 2 sample rows"):
        predictions.predictions_csv(ids, ids, ids, ids, {"long": np.zeros(3)})
    with pytest.raises(ValueError, match="labels has 1 entries for 2 rows"):
        predictions.predictions_csv(ids, ids, ids, ids[:1], {})
    with pytest.raises(ValueError, match=r"\['label'\] clash"):
        predictions.predictions_csv(ids, ids, ids, ids, {"label": np.zeros(2)})
