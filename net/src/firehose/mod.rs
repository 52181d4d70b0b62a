//! Amazon Data Firehose (`Firehose_20150804.*`, JSON 1.1, SigV4 service `firehose`). Being
//! built for issue 10; so far the pure pieces: the S3 prefix expressions ([`prefix`]) that
//! delivery streams are created with, the object names, compression formats and file
//! extensions ([`key`]) their objects are delivered under, the Lambda transformation
//! contract ([`lambda`]), the error records written under the error prefix ([`errors`]) and
//! the HTTP endpoint delivery contract ([`http_endpoint`]).

pub mod errors;
pub mod http_endpoint;
pub mod key;
pub mod lambda;
pub mod prefix;
