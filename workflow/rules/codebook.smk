rule answer_schema:
    input:
        codebook=CFG.codebook,
        system=CFG.prompts["system"],
        user=CFG.prompts["user"],
    output:
        schema=f"{RESULTS}/codebook/answer.schema.json",
        system_prompt=f"{RESULTS}/codebook/system_prompt.txt",
    log:
        f"{RESULTS}/logs/answer_schema/answer_schema.log",
    params:
        structured_output=CFG.llm.structured_output,
    script:
        "../scripts/answer_schema.py"
