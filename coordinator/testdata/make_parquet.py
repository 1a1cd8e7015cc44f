"""Writes the Parquet fixtures of the corpus reader's tests, as pyarrow writes datasets.

Run with pyarrow installed: python make_parquet.py (pyarrow 26 wrote the committed files).
"""

import pyarrow as pa
import pyarrow.parquet as pq

rows = {
    "id": [1, 2, None, 4],
    "text": [
        "Everyone has the right to life, liberty and security of person.",
        "Toute personne a droit à la vie, à la liberté et à la sûreté de sa personne.",
        None,
        "Jeder hat das Recht auf Leben, Freiheit und Sicherheit der Person.",
    ],
    "url": ["https://a.example/1", None, None, "https://a.example/4"],
    "score": [0.5, 0.25, 1.0, None],
    "tags": [["a", "b"], [], None, ["c"]],
}
table = pa.table(rows)
pq.write_table(table, "pyarrow-snappy.parquet", compression="snappy")
pq.write_table(table, "pyarrow-zstd.parquet", compression="zstd")
