"""Operations on an open store, each in its own module.

put.py          put: walk, chunk, claim, upload, commit
read.py         get and restore, with the verified chunk fetcher
maintenance.py  rm, gc, verify, stats
history.py      snapshots, --as-of, diff, forget
"""
