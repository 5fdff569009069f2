"""Create the two IAM instance profiles that cluster/aws.yaml names, least privilege for one bucket.

    python cluster/aws_iam_setup.py my-bucket

- ``raydetect-head``: what Ray's autoscaler does to EC2 (start, stop, tag and list instances), handing
  the worker role (and no other) to the instances it starts, and the bucket for the job drivers.
- ``raydetect-worker``: the bucket (list, read, write, delete), nothing else.

Run once per account with credentials that may manage IAM; running it again updates the policies (for
another bucket, say). Uses boto3, which `ray up` on AWS needs anyway.
"""

from __future__ import annotations

import argparse
import json
import sys

HEAD_PROFILE = "raydetect-head"
WORKER_PROFILE = "raydetect-worker"

EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
AUTOSCALER_EC2_ACTIONS = [
    "ec2:RunInstances", "ec2:TerminateInstances", "ec2:StartInstances", "ec2:StopInstances",
    "ec2:CreateTags", "ec2:DeleteTags", "ec2:Describe*",
]


def bucket_policy(bucket: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
             "Resource": f"arn:aws:s3:::{bucket}"},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
             "Resource": f"arn:aws:s3:::{bucket}/*"},
        ],
    }


def autoscaler_policy(account: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": AUTOSCALER_EC2_ACTIONS, "Resource": "*"},
            {"Effect": "Allow", "Action": "iam:PassRole", "Resource": f"arn:aws:iam::{account}:role/{WORKER_PROFILE}"},
        ],
    }


def ensure_role_and_profile(iam, name: str) -> None:
    """A role EC2 may assume, inside an instance profile of the same name (both kept if they exist)."""
    try:
        iam.get_role(RoleName=name)
    except iam.exceptions.NoSuchEntityException:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(EC2_TRUST))
    try:
        iam.get_instance_profile(InstanceProfileName=name)
    except iam.exceptions.NoSuchEntityException:
        iam.create_instance_profile(InstanceProfileName=name)
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)


def setup_profiles(iam, account: str, bucket: str) -> None:
    for name in (WORKER_PROFILE, HEAD_PROFILE):
        ensure_role_and_profile(iam, name)
        iam.put_role_policy(RoleName=name, PolicyName="raydetect-bucket", PolicyDocument=json.dumps(bucket_policy(bucket)))
    iam.put_role_policy(
        RoleName=HEAD_PROFILE, PolicyName="raydetect-autoscaler", PolicyDocument=json.dumps(autoscaler_policy(account))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bucket", help="the bucket that holds the videos and receives the results")
    args = parser.parse_args(argv)
    import boto3

    session = boto3.Session()
    account = session.client("sts").get_caller_identity()["Account"]
    setup_profiles(session.client("iam"), account, args.bucket)
    print(f"instance profiles {HEAD_PROFILE} and {WORKER_PROFILE} are ready for bucket {args.bucket}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
