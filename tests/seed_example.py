# The Python examples from the seed page (shared/seed/flux-fill-pro-api.txt), verbatim except for
# what a user changes: the base URL, the key and the image URLs (here, placeholders that the test
# fills in), and JOB_ID, which the page leaves to the reader, taken from the first response.
import requests
response = requests.post(
"BASE_URL/v2/images/edit",
headers={
"X-API-Key": "API_KEY",
"Content-Type": "application/json",
},
json={
"prompt": "a sleek silver sports car on a coastal highway at sunset, hyper-realistic",
"model": "flux-fill-pro",
"fluxFillParams": {
"image": "IMAGE_URL",
"mode": "inpaint",
"mask": "MASK_URL",
"outpaint": "Zoom out 1.5x"
}
},
)
print(response.json()) # { "jobId": "...", "status": "QUEUED" }
JOB_ID = response.json()["jobId"]
import requests, time
while True:
    job = requests.get(
    f"BASE_URL/v2/jobs/{JOB_ID}",
    headers={"X-API-Key": "API_KEY"},
    ).json()
    if job["status"] in ("COMPLETED", "FAILED"):
        break
    time.sleep(2)
print(job["result"])
