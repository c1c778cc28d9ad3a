// regkit batch as a Nextflow pipeline: 4 tasks, one shard of pairs.csv each, then the merge.
//
//   nextflow run main.nf --study /project/study      (holds pairs.csv; results/ goes there)
//
// Task k runs the rows r with r mod 4 = k (regkit reads k from REGKIT_SHARD_INDEX). The
// outputs live in the study folder, not in Nextflow's work folders, so `-resume` or a plain
// rerun skips every row whose result.json is up to date; `errorStrategy 'retry'` reruns a
// shard whose rows failed (exit 1) or that was killed. The study folder must be on storage
// every task sees (a shared file system).
params.study = "${launchDir}"

process REGKIT_BATCH {
    cpus 2
    memory '8 GB'
    errorStrategy 'retry'
    maxRetries 2

    input:
    val shard

    output:
    val shard

    script:
    """
    cd '${params.study}'
    export REGKIT_SHARD_INDEX=${shard}
    regkit batch --manifest pairs.csv --out-dir results --shards 4
    """
}

process REGKIT_MERGE {
    input:
    val shards

    script:
    """
    cd '${params.study}'
    regkit batch merge results --manifest pairs.csv
    """
}

workflow {
    // shards 0, 1, 2, 3: the --shards 4 of the command
    REGKIT_MERGE(REGKIT_BATCH(Channel.of(0..3)).collect())
}
