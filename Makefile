# Short targets that forward to npm scripts. Each installs what is missing first.
.PHONY: demo test bench soak build clean

node_modules/.package-lock.json: package.json package-lock.json
	npm ci
	@touch $@

build: node_modules/.package-lock.json
	npm run build

demo: node_modules/.package-lock.json
	npm run demo

test: node_modules/.package-lock.json
	npm test

clean:
	rm -rf dist

bench: node_modules/.package-lock.json
	npm run bench

soak: node_modules/.package-lock.json
	npm run soak
