"""Ingest of objects uploaded to a bucket (the Lambda handler) or already in one.

ingestor.py   the Lambda handler and the same ingest for a bucket already full
batch.py      the batch function of the Step Functions Distributed Map (ingest or scan)
events.py     S3 event notifications (direct, through SQS, through EventBridge) as records
ledger.py     the DynamoDB table that makes ingest process each object version once
observe.py    structured logs and CloudWatch metrics (aws-lambda-powertools)
"""
