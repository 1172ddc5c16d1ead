"""Backends: where bytes and records live.

blobstore.py   the blob store interface (put, get, stat, delete, list)
catalog.py     the catalog interface and the protocol that makes gc safe
local.py       blobs in a local folder
sqlite.py      the catalog in an embedded SQLite file
s3.py          blobs in an S3 bucket
dynamodb/      the catalog in a DynamoDB table
aws.py         boto3 clients, retries, error translation, request accounting, cost
sessions.py    writer sessions and their leases
faulty.py      fault injection wrappers for tests
"""
