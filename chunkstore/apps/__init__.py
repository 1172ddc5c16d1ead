"""Applications built on the library: the web server, the Lambda ingest and bucket scans.

server/     the HTTP API and web page (chunkstore serve)
ingest/     upload-triggered ingest (AWS Lambda) and the ingest of a full bucket
scan.py     duplicate objects in a bucket, what they cost, and their removal
bucket.py   S3 objects outside a store: listing, and streamed parallel ranged reads
"""
