"""What an uploader (the web page, the ingest function) is told of each file it uploaded."""

UPLOAD_MESSAGES = {"stored": "File processed successfully", "duplicate": "Duplicate file detected"}
